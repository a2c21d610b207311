"""Running generations from Blender: network I/O on a worker thread, bpy data only on the main thread.

In the UI a `TaskRunner` thread talks to the runtime and a `bpy.app.timers` callback drains its queue on the main
thread (progress, preview, the finished image). In background mode (no event loop, so no timers) and in tests the
same work runs inline: `run_job_sync` from worker.py plus `finish` here. Swapping the fake runtime of the tests
for a real one is only a different URL and token in the preferences.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from typing import Any, Callable

import bpy

from ..runtime.client import RuntimeClientError
from . import logic, scene as scene_data
from .preferences import get_prefs, output_dir, runtime_config
from .worker import CancelToken, JobResult, TaskRunner, connect, run_job_sync

__all__ = ["run_job_sync", "generate", "run_task", "cancel", "busy", "STATE", "shutdown"]

TICK = 0.1
FORCE_THREAD = False  # tests: use the worker thread even in background mode (then call drain_all() to finish)


class JobState:
    """What the panel shows about the current/last generation (plain Python: read by draw(), set on main thread)."""

    def __init__(self) -> None:
        self.text = ""
        self.error = ""
        self.progress = 0.0
        self.running = False
        self.preview_name = ""
        self._last_preview = ""

    def reset(self, text: str = "") -> None:
        self.__init__()  # type: ignore[misc]
        self.text = text


STATE = JobState()
RUNNER = TaskRunner()
_timers: list[Callable[[], float | None]] = []


def use_thread() -> bool:
    return FORCE_THREAD or not bpy.app.background


def busy() -> bool:
    return RUNNER.busy


def _redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES", "IMAGE_EDITOR"):
                area.tag_redraw()


def _notify_error(message: str) -> None:
    """Show an error that arrives after the operator returned (thread mode) as a popup."""
    print(f"Imagen: {message}")
    wm = bpy.context.window_manager
    if getattr(wm, "windows", None):
        wm.popup_menu(lambda menu, _: menu.layout.label(text=message), title="Imagen", icon="ERROR")


def run_task(runner: TaskRunner, work: Callable, on_done: Callable[[Any], Any],
             on_error: Callable[[BaseException], Any], on_progress: Callable[[Any], Any] | None = None) -> None:
    """Run work(emit, cancel) on the runner's thread (UI) or inline (background mode / tests)."""
    if not use_thread():
        token = CancelToken()
        try:
            value = work(on_progress or (lambda _: None), token)
        except BaseException as err:  # noqa: BLE001 (handed to on_error, like the threaded path)
            on_error(err)
        else:
            on_done(value)
        return
    runner.start(work, on_done=on_done, on_error=on_error, on_progress=on_progress)

    def tick() -> float | None:
        more = runner.drain()
        _redraw()
        if not more:
            _timers.remove(tick)
            return None
        return TICK

    _timers.append(tick)
    bpy.app.timers.register(tick, first_interval=TICK)


def drain_all(timeout: float = 30.0) -> None:
    """Tests: pump the timers of threaded tasks until they finish (background mode has no event loop)."""
    import time

    deadline = time.monotonic() + timeout
    while _timers and time.monotonic() < deadline:
        for tick in list(_timers):
            if tick() is None:
                if tick in _timers:
                    _timers.remove(tick)
                if bpy.app.timers.is_registered(tick):
                    bpy.app.timers.unregister(tick)
        time.sleep(0.02)


# --- generation ---------------------------------------------------------------------------------------------------


def generate(context: bpy.types.Context, request: dict[str, Any],
             on_image: Callable[[bpy.types.Image], Any] | None = None) -> str | None:
    """Generate an image for `request` (logic.build_request). Returns an error message, or None.

    The image is saved to the output folder, loaded as a datablock with its history record, set as the scene's
    current image and shown in open Image Editors; then on_image(image) runs. In thread mode errors arrive
    later and are shown in the panel and a popup.
    """
    if RUNNER.busy:
        return "A generation is already running: wait for it or press Cancel"
    config = runtime_config(context)
    try:
        folder = writable_output_dir(context)
    except RuntimeError as err:
        return str(err)
    scene_name = context.scene.name
    outcome: dict[str, str] = {}
    STATE.reset("Connecting to the runtime")
    STATE.running = True

    def work(emit: Callable[[Any], None], cancel: CancelToken) -> JobResult:
        client = connect(config)
        fitted = logic.fit_request_to_model(request, client.health())
        emit({"status": "queued"})
        return run_job_sync(client, fitted, on_progress=emit, cancel=cancel)

    def on_done(result: JobResult) -> None:
        STATE.running = False
        try:
            image = finish(result, request, folder, bpy.data.scenes.get(scene_name))
        except OSError as err:  # e.g. the disk filled up during the generation
            return on_error(RuntimeError(f"Could not save the image in the output folder {folder} "
                                         f"({err.strerror or err}): free some space or choose another Output "
                                         "Folder in the add-on preferences"))
        except RuntimeError as err:
            return on_error(err)
        STATE.text, STATE.progress = f"Done: {image.name} (seed {result.result.get('seed')})", 1.0
        if on_image is not None:
            on_image(image)

    def on_error(err: BaseException) -> None:
        STATE.running = False
        if isinstance(err, RuntimeClientError) and err.kind == "cancelled":
            STATE.text = "Cancelled"
            return
        message = str(err) if isinstance(err, (RuntimeClientError, OSError, RuntimeError)) else repr(err)
        STATE.error = STATE.text = message
        outcome["error"] = message
        if use_thread():
            _notify_error(message)

    run_task(RUNNER, work, on_done, on_error, on_progress)
    return outcome.get("error")


def writable_output_dir(context: bpy.types.Context) -> str:
    """The output folder, created when missing and checked writable (RuntimeError with the message otherwise):
    checked before a generation starts, so the runtime never works for an image that cannot be saved."""
    try:
        folder = output_dir(context)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        prefs = get_prefs(context)
        where = bpy.path.abspath(prefs.output_dir) if prefs is not None and prefs.output_dir else err.filename
        raise RuntimeError(f"Cannot save images in the output folder {where} ({err.strerror or err}): choose "
                           "another Output Folder in the add-on preferences") from None
    return folder


def on_progress(status: dict[str, Any]) -> None:
    STATE.text = logic.progress_text(status)
    STATE.progress = float(status.get("progress") or 0.0)
    preview = status.get("preview")
    if preview and preview != STATE._last_preview and use_thread():
        STATE._last_preview = preview
        _show_preview(preview)


def _show_preview(preview_b64: str) -> None:
    try:
        data = base64.b64decode(preview_b64)
    except (binascii.Error, ValueError):
        return
    path = os.path.join(tempfile.gettempdir(), f"imagen_preview_{os.getpid()}.png")
    with open(path, "wb") as fh:
        fh.write(data)
    image = bpy.data.images.get("Imagen Preview")
    if image is None:
        image = bpy.data.images.load(path, check_existing=False)
        image.name = "Imagen Preview"
    else:
        image.filepath = path
        image.reload()
    image.preview_ensure()
    if image.preview is not None:
        image.preview.reload()
    STATE.preview_name = image.name


def finish(result: JobResult, request: dict[str, Any], folder: str,
           scene: bpy.types.Scene | None) -> bpy.types.Image:
    """Main thread: turn a finished job into an image datablock with its history record."""
    record = logic.history_record(request, result.result)
    image = scene_data.load_result_image(result.png, record, folder)
    if scene is not None:
        scene.imagen.image = image  # type: ignore[attr-defined]
    scene_data.show_in_image_editors(image)
    return image


def cancel() -> None:
    if RUNNER.busy:
        STATE.text = "Cancelling"
        RUNNER.cancel()


def shutdown() -> None:
    """unregister(): stop draining, forget the running task, drop the preview image."""
    for tick in list(_timers):
        if bpy.app.timers.is_registered(tick):
            bpy.app.timers.unregister(tick)
    _timers.clear()
    RUNNER.abandon()
    STATE.reset()
