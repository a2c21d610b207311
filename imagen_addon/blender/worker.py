"""Network side of a generation, without bpy: runs on a worker thread (UI) or inline (background mode, tests).

`run_job_sync` submits a request, polls it to the end and downloads the PNG: only a RuntimeClient is needed, so a
fake runtime and the real one differ only by URL and token. `TaskRunner` runs such work on one background thread
and hands its events to the main thread through a queue.Queue, which the bpy side drains from a `bpy.app.timers`
callback (jobs.py); nothing here touches Blender data.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

from ..runtime.client import RuntimeClient, RuntimeClientError
from ..runtime.launcher import LauncherError, RuntimeLauncher
from .logic import RuntimeConfig, check_url_allowed


@dataclass
class JobResult:
    job_id: str
    status: dict[str, Any]  # the final job status object, with `result`
    png: bytes

    @property
    def result(self) -> dict[str, Any]:
        return self.status.get("result") or {}


class CancelToken:
    """Set from the main thread; the worker cancels the runtime job as soon as it knows its id."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.client: RuntimeClient | None = None
        self.job_id: str | None = None

    def set(self) -> None:
        self._event.set()
        if self.client is not None and self.job_id is not None:
            try:
                self.client.cancel(self.job_id)
            except RuntimeClientError:
                pass

    def is_set(self) -> bool:
        return self._event.is_set()


def run_job_sync(client: RuntimeClient, request: dict[str, Any], on_progress: Callable[[dict], Any] | None = None,
                 poll: float = 0.25, timeout: float | None = None, cancel: CancelToken | None = None) -> JobResult:
    """Submit `request`, wait for it and download the image. Raises RuntimeClientError (kind "cancelled", ...)."""
    job_id = client.submit(**request)
    if cancel is not None:
        cancel.client, cancel.job_id = client, job_id
        if cancel.is_set():
            cancel.set()
    status = client.wait(job_id, poll=poll, on_progress=on_progress, timeout=timeout)
    return JobResult(job_id=job_id, status=status, png=client.image(job_id))


# --- connecting ------------------------------------------------------------------------------------------------

_launchers: dict[tuple[str, str, str], RuntimeLauncher] = {}
_launchers_lock = threading.Lock()


def launcher_for(config: RuntimeConfig) -> RuntimeLauncher:
    """One launcher per (state folder, interpreter, model), so the process it started can be stopped later."""
    key = (config.state_dir, config.python, config.model_dir)
    with _launchers_lock:
        if key not in _launchers:
            _launchers[key] = RuntimeLauncher(config.state_dir, python=config.python, model_dir=config.model_dir,
                                              extra_paths=config.extra_paths)
        return _launchers[key]


def stop_all_launchers() -> None:
    """unregister() / exit: stop the runtimes this Blender started; a thread still connecting starts none."""
    with _launchers_lock:
        launchers = list(_launchers.values())
        _launchers.clear()
    for launcher in launchers:
        launcher.close()


def connect(config: RuntimeConfig, start: bool | None = None) -> RuntimeClient:
    """A client for the configured runtime; in LOCAL mode starts one when allowed (blocking: call off the UI)."""
    if config.mode == "REMOTE":
        refusal = check_url_allowed(config.url, config.online_access)
        if refusal:
            raise RuntimeClientError(refusal, kind="request")
        return RuntimeClient(config.url, config.token, timeout=config.timeout)
    launcher = launcher_for(config)
    info = launcher.running()
    if info is None:
        if not (config.auto_start if start is None else start):
            raise RuntimeClientError("The Imagen runtime is not running: press Start Runtime in the add-on "
                                     "preferences, or enable 'Start automatically'", kind="connection")
        try:
            info = launcher.ensure_running()
        except LauncherError as err:
            raise RuntimeClientError(str(err), kind="connection") from None
    return info.client(timeout=config.timeout)


# --- background thread ---------------------------------------------------------------------------------------


class TaskRunner:
    """Runs one task at a time on a daemon thread; `drain()` (main thread) delivers its events in order.

    work(emit, cancel) runs on the thread; emit(payload) queues a progress event. When it returns, on_done(value)
    runs on the main thread; when it raises, on_error(exception). on_progress(payload) likewise.
    """

    def __init__(self) -> None:
        self._events: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._handlers: dict[str, Callable[[Any], Any]] = {}
        self.cancel_token: CancelToken | None = None
        self._thread_id: object | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, work: Callable[[Callable[[Any], None], CancelToken], Any], on_done: Callable[[Any], Any],
              on_error: Callable[[BaseException], Any], on_progress: Callable[[Any], Any] | None = None) -> None:
        if self.busy:
            raise RuntimeError("a task is already running")
        cancel = CancelToken()
        self.cancel_token = cancel
        self._handlers = {"done": on_done, "error": on_error, "progress": on_progress or (lambda _: None)}
        self._thread_id = thread_id = object()  # tags this task's events
        self._thread = threading.Thread(target=self._run, args=(work, cancel, thread_id), daemon=True,
                                        name="imagen-task")
        self._thread.start()

    def _run(self, work, cancel: CancelToken, thread_id: object) -> None:
        try:
            value = work(lambda payload: self._events.put(("progress", payload, thread_id)), cancel)
        except BaseException as err:  # delivered to the main thread, never lost
            self._events.put(("error", err, thread_id))
        else:
            self._events.put(("done", value, thread_id))

    def cancel(self) -> None:
        if self.cancel_token is not None:
            token = self.cancel_token
            threading.Thread(target=token.set, daemon=True, name="imagen-cancel").start()

    def drain(self) -> bool:
        """Deliver queued events on the calling (main) thread. Returns True while the task is still running."""
        while True:
            try:
                kind, payload, thread_id = self._events.get_nowait()
            except queue.Empty:
                return self.busy
            if thread_id is not self._thread_id:
                continue  # a stale event from an abandoned task
            handlers = self._handlers
            if kind in ("done", "error"):
                self._thread, self.cancel_token = None, None
            handlers[kind](payload)

    def abandon(self) -> None:
        """Forget the running task (unregister): its thread finishes alone and its events are dropped."""
        self.cancel()
        self._thread, self.cancel_token, self._thread_id = None, None, None
