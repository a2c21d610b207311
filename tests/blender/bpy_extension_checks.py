"""Checks of the installed extension inside real Blender (bpy as a module), run by test_extension.py.

    python bpy_extension_checks.py EXTENSION_ZIP REPORT_JSON

Runs in its own process (bpy is global state and can be imported once) with BLENDER_USER_RESOURCES pointing to a
temporary folder. The checks run in ORDER; the report maps each name to {"ok", "detail"} (or "skipped"). The
operators run their synchronous paths against a fake runtime (tests/runtime/fake_imagen_runtime.py) in a thread,
or against a real runtime with env IMAGEN_TEST_RUNTIME_URL / IMAGEN_TEST_RUNTIME_TOKEN / IMAGEN_TEST_NATIVE_SIZE
(test_extension.py serves the bundled model); IMAGEN_TEST_MODEL_DIR adds a local runtime started by the add-on.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bpy  # noqa: E402
import bpy_scene_checks  # noqa: E402,F401  (registers the scene checks)

assert bpy_scene_checks.__name__
from bpy_checks_common import (  # noqa: E402
    CHECKS, FAKE, NATIVE, OPERATORS, REAL, PANELS, PKG, RecordingLayout, Skip, check, expect_error, free_port, last_job_body, mod, prefs, settings,
    snapshot, use_runtime,
)

ORDER = (
    "install", "registered", "build_scene", "describe_scene", "describe_empty_scene_is_refused",
    "empty_prompt_is_refused", "runtime_down_is_reported", "offline_refuses_remote_url", "local_runtime_not_started",
    "wrong_token_is_reported", "generate_from_prompt", "history_reuse", "set_world_panorama",
    "apply_material_and_reuse", "apply_material_refusals", "project_from_camera", "project_refusals",
    "generate_from_view", "generate_from_view_without_camera", "upscale_image", "pbr_maps",
    "upscale_and_pbr_refusals", "threaded_path_and_cancel", "local_runtime_autostart",
    "panels_and_preferences_draw", "disable_and_reenable",
)


@check
def install(zip_path: str) -> str:
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"}, result
    assert PKG in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
    return bpy.utils.extension_path_user(PKG)


@check
def registered(_) -> None:
    for name in OPERATORS:
        getattr(bpy.ops.imagen, name).get_rna_type()  # KeyError when not registered
    for name in PANELS:
        assert hasattr(bpy.types, name), name
    assert mod("preferences").ImagenPreferences.bl_idname == PKG
    assert prefs().runtime_mode == "LOCAL" and prefs().python_path == sys.executable
    assert hasattr(bpy.types.Scene, "imagen")


@check
def build_scene(_) -> None:
    """Cube (red material), plane, light and camera looking at the origin, blue world."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0, 0, 0.5))
    cube = bpy.context.active_object
    red = bpy.data.materials.new("Red")
    red.diffuse_color = (0.8, 0.05, 0.05, 1.0)
    if bpy.app.version < (5, 0, 0):
        red.use_nodes = True
    red.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.8, 0.05, 0.05, 1.0)
    cube.data.materials.append(red)
    bpy.ops.mesh.primitive_plane_add(size=6.0)
    bpy.ops.object.light_add(type="SUN", location=(2, 2, 5))
    bpy.ops.object.camera_add(location=(0, -6, 2), rotation=(1.33, 0, 0))
    scene = bpy.context.scene
    scene.camera = bpy.context.active_object
    scene.render.resolution_x, scene.render.resolution_y = 48, 32
    world = bpy.data.worlds.new("Sky")
    world.color = (0.1, 0.25, 0.85)
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.1, 0.25, 0.85, 1.0)
    scene.world = world
    assert hasattr(scene, "imagen")


@check
def empty_prompt_is_refused(_) -> None:
    use_runtime()
    settings().prompt = "   "
    before, requests = snapshot(), len(FAKE.requests)
    expect_error(bpy.ops.imagen.generate, "Enter a prompt")
    assert snapshot() == before and len(FAKE.requests) == requests


@check
def runtime_down_is_reported(_) -> str:
    url = f"http://127.0.0.1:{free_port()}"
    use_runtime(url)
    settings().prompt = "a red brick wall"
    before = snapshot()
    message = expect_error(bpy.ops.imagen.generate, "not running at")
    assert snapshot() == before
    return message


@check
def offline_refuses_remote_url(_) -> str:
    assert not bpy.app.online_access
    use_runtime("http://10.255.255.1:9")
    before = snapshot()
    message = expect_error(bpy.ops.imagen.generate, "Online access is disabled")
    assert snapshot() == before
    return message


@check
def local_runtime_not_started(_) -> None:
    prefs().runtime_mode, prefs().auto_start = "LOCAL", False
    expect_error(bpy.ops.imagen.generate, "press Start Runtime")


@check
def wrong_token_is_reported(_) -> None:
    use_runtime(token="nope")
    expect_error(bpy.ops.imagen.generate, "wrong token")


@check
def generate_from_prompt(_) -> dict:
    use_runtime()
    s = settings()
    s.prompt, s.random_seed, s.seed, s.steps = "a red brick wall", False, 42, 12
    assert bpy.ops.imagen.generate() == {"FINISHED"}
    image = s.image
    assert image is not None and tuple(image.size) == (NATIVE, NATIVE), (image, tuple(image.size))
    assert image["imagen_prompt"] == "a red brick wall" and image["imagen_seed"] == 42
    stored = json.loads(image["imagen_settings"])
    assert stored["steps"] == 12 and stored["seed"] == 42, stored
    assert os.path.isfile(bpy.path.abspath(image.filepath)), image.filepath
    sent = last_job_body()
    assert sent is None or (sent["prompt"], sent["seed"], sent["mode"]) == ("a red brick wall", 42, "text2img")
    return {"image": image.name, "file": image.filepath}


@check
def history_reuse(_) -> None:
    s = settings()
    first = s.image
    s.prompt, s.random_seed, s.steps = "a mossy stone", True, 30
    bpy.ops.imagen.generate()
    second = s.image
    assert second != first and second["imagen_prompt"] == "a mossy stone"
    history = mod("scene").history_images()
    assert {img.name for img, _ in history} >= {first.name, second.name}
    bpy.ops.imagen.history_reuse(image_name=first.name)
    assert (s.prompt, s.seed, s.random_seed, s.steps) == ("a red brick wall", 42, False, 12)
    assert s.image == first
    expect_error(bpy.ops.imagen.history_reuse, "No Imagen history", image_name="Render Result")


@check
def threaded_path_and_cancel(_) -> None:
    jobs = mod("jobs")
    jobs.FORCE_THREAD = True
    try:
        settings().prompt = "a tree"
        count = len(bpy.data.images)
        assert bpy.ops.imagen.generate() == {"FINISHED"}
        assert jobs.busy() and not bpy.ops.imagen.generate.poll()
        jobs.drain_all()
        assert not jobs.busy() and len(bpy.data.images) >= count + 1
        assert settings().image["imagen_prompt"] == "a tree"
        # The timer callbacks showed the runtime's preview while it ran (the fake sends one on every poll).
        assert REAL or (jobs.STATE.preview_name == "Imagen Preview" and "Imagen Preview" in bpy.data.images)
        FAKE.steps, settings().steps = 10_000, 250
        names = {i.name for i in bpy.data.images if "imagen_prompt" in i}
        bpy.ops.imagen.generate()
        time.sleep(0.3)
        bpy.ops.imagen.cancel()
        jobs.drain_all()
        assert jobs.STATE.text == "Cancelled", jobs.STATE.text
        assert {i.name for i in bpy.data.images if "imagen_prompt" in i} == names
    finally:
        FAKE.steps, settings().steps = 2, 12
        jobs.FORCE_THREAD = False


@check
def local_runtime_autostart(_) -> dict:
    """LOCAL mode: the first generation starts `python -m imagen_addon.runtime.server` from the installed add-on
    folder with this interpreter; Stop Runtime ends it. Needs a saved model: env IMAGEN_TEST_MODEL_DIR."""
    model = os.environ.get("IMAGEN_TEST_MODEL_DIR")
    if not model:
        raise Skip("needs a saved model in IMAGEN_TEST_MODEL_DIR: the [bundled] run of this check starts one")
    p = prefs()
    p.runtime_mode, p.auto_start, p.model_dir, p.python_path = "LOCAL", True, model, sys.executable
    settings().prompt = "a local runtime"
    assert bpy.ops.imagen.generate() == {"FINISHED"}
    assert settings().image["imagen_prompt"] == "a local runtime"
    worker = mod("worker")
    launcher = worker.launcher_for(mod("preferences").runtime_config())
    info = launcher.running()
    assert info is not None and info.started_here and info.model == model
    bpy.ops.imagen.runtime_check()
    assert mod("runtime_ops").STATUS.text.startswith("Runtime ready"), mod("runtime_ops").STATUS.text
    bpy.ops.imagen.runtime_stop()
    pid_alive = sys.modules[f"{PKG}.imagen_addon.runtime.launcher"].pid_alive
    deadline = time.monotonic() + 20
    while pid_alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(info.pid) and launcher.running() is None
    return {"url": info.url, "pid": info.pid}


@check
def panels_and_preferences_draw(_) -> list:
    """Every draw() runs without error, idle and busy, with a history (layouts recorded, see RecordingLayout)."""
    from types import SimpleNamespace

    jobs, calls = mod("jobs"), []
    busy = jobs.busy
    try:
        for state in (False, True):
            jobs.busy = lambda: state  # the panels ask jobs.busy(); a real job can't be held open here
            for name in PANELS:
                panel = getattr(bpy.types, name)
                assert panel.poll(bpy.context)
                layout = RecordingLayout()
                panel.draw(SimpleNamespace(layout=layout), bpy.context)
                calls += layout.calls
    finally:
        jobs.busy = busy
    for mode in ("LOCAL", "REMOTE"):
        prefs().runtime_mode = mode

        class Proxy:
            layout = RecordingLayout(calls)

            def __getattr__(self, name):
                return getattr(prefs(), name)

        mod("preferences").ImagenPreferences.draw(Proxy(), bpy.context)
    names = {arg for kind, arg in calls if kind == "operator"}
    assert names >= {f"imagen.{op}" for op in OPERATORS}, names  # every operator has a button somewhere
    assert ("prop", "prompt") in calls and any(kind == "progress" for kind, _ in calls)
    return sorted(names)


@check
def disable_and_reenable(_) -> None:
    bpy.ops.preferences.addon_disable(module=PKG)
    assert PKG not in bpy.context.preferences.addons
    assert not hasattr(bpy.types.Scene, "imagen") and not hasattr(bpy.types, "VIEW3D_PT_imagen")
    bpy.ops.preferences.addon_enable(module=PKG)
    registered(None)
    use_runtime()
    settings().prompt = "after re-enable"
    assert bpy.ops.imagen.generate() == {"FINISHED"}


def main() -> int:
    zip_path, report_path = sys.argv[-2], sys.argv[-1]
    report = {}
    assert sorted(ORDER) == sorted(CHECKS), set(ORDER) ^ set(CHECKS)
    FAKE.start()
    try:
        for fn in (CHECKS[name] for name in ORDER):
            try:
                detail = fn(zip_path)
                report[fn.__name__] = {"ok": True, "detail": detail}
            except Skip as reason:
                report[fn.__name__] = {"ok": True, "skipped": str(reason)}
            except Exception:  # noqa: BLE001 (recorded for the pytest side)
                report[fn.__name__] = {"ok": False, "detail": traceback.format_exc()}
                if fn.__name__ in ("install", "registered"):
                    break
    finally:
        FAKE.stop()
        Path(report_path).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
