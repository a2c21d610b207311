"""Reliability checks of the installed extension inside real Blender (bpy as a module), run by test_blender.py.

    python bpy_reliability_checks.py EXTENSION_ZIP REPORT_JSON

Runs in its own process with a temporary Blender user folder. Env: IMAGEN_TEST_RO_DIR (a read-only folder, else that
check is skipped), PYTHONPATH (must hold tests/reliability: the add-on's launcher starts `reliability_serve`, the
real runtime around a fake model, in LOCAL mode). The checks run in ORDER; the report maps each name to
{"ok", "detail"} or {"ok", "skipped"}. Shared helpers (fake runtime, scene snapshot) are tests/blender's.
"""

from __future__ import annotations

import functools
import io
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "blender"))

import bpy  # noqa: E402
from bpy_checks_common import (  # noqa: E402
    FAKE, PKG, Skip, expect_error, mod, prefs, select, settings, snapshot, use_runtime,
)
from fake_imagen_runtime import FakeRuntime  # noqa: E402

ORDER = ("install", "build_scene", "object_without_uvs", "non_mesh_objects", "read_only_output_folder",
         "output_folder_cannot_be_created", "disable_during_generation", "disable_while_connecting")
CHECKS: dict = {}
WORK = Path.cwd() / "reliability-work"  # test_blender.py runs this in a temporary folder
WORK.mkdir(exist_ok=True)


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def live_children() -> list[int]:
    """Pids of this process's children that are still running (zombies excluded)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == os.getpid() and state not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


def wait_until(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


# ---- scene ---------------------------------------------------------------------------------------------------------
@check
def install(zip_path: str) -> str:
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"} and PKG in bpy.context.preferences.addons, result
    return bpy.utils.extension_path_user(PKG)


@check
def build_scene(_) -> None:
    """Meshes without UVs (a cube, a plane, a mesh without any vertex), a curve, a text, an empty, a camera."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0, 0, 0.5), calc_uvs=False)
    bpy.context.active_object.name = "BareCube"
    bpy.ops.mesh.primitive_plane_add(size=4.0, calc_uvs=False)
    bpy.context.active_object.name = "BarePlane"
    empty_mesh = bpy.data.objects.new("VertexlessMesh", bpy.data.meshes.new("Vertexless"))
    bpy.context.scene.collection.objects.link(empty_mesh)
    bpy.ops.curve.primitive_bezier_curve_add(location=(2, 0, 0))
    bpy.context.active_object.name = "Curve"
    bpy.ops.object.text_add(location=(-2, 0, 0))
    bpy.context.active_object.name = "Text"
    bpy.ops.object.empty_add(location=(0, 2, 0))
    bpy.context.active_object.name = "Empty"
    bpy.ops.object.camera_add(location=(0, -6, 2), rotation=(1.33, 0, 0))
    bpy.context.scene.camera = bpy.context.active_object
    world = bpy.data.worlds.new("Sky")
    bpy.context.scene.world = world
    for name in ("BareCube", "BarePlane", "VertexlessMesh"):
        assert len(bpy.data.objects[name].data.uv_layers) == 0, name
    settings().image = bpy.data.images.new("Imagen test image", 32, 32)


@check
def object_without_uvs(_) -> dict:
    """Apply to meshes without UVs: each gets a box-projected UV map (inside 0..1) and the material; Project from
    Camera on a mesh without UVs makes its 'Imagen Camera' map."""
    select("BareCube", "VertexlessMesh")
    assert bpy.ops.imagen.apply_material() == {"FINISHED"}
    cube, vertexless = bpy.data.objects["BareCube"], bpy.data.objects["VertexlessMesh"]
    assert [uv.name for uv in cube.data.uv_layers] == ["UVMap"]
    uvs = [tuple(d.uv) for d in cube.data.uv_layers["UVMap"].data]
    assert len(uvs) == len(cube.data.loops) and all(0.0 <= u <= 1.0 and 0.0 <= v <= 1.0 for u, v in uvs), uvs
    for poly in cube.data.polygons:  # every face gets a real area of the image, not one point
        us, vs = zip(*(uvs[i] for i in poly.loop_indices))
        assert max(us) - min(us) > 0.5 and max(vs) - min(vs) > 0.5, (poly.index, us, vs)
    assert cube.active_material is not None and cube.active_material is vertexless.active_material
    assert [uv.name for uv in vertexless.data.uv_layers] == ["UVMap"]
    select("BarePlane")
    assert bpy.ops.imagen.project_from_camera() == {"FINISHED"}
    plane = bpy.data.objects["BarePlane"]
    assert [uv.name for uv in plane.data.uv_layers] == ["Imagen Camera"]
    return {"cube_faces": len(cube.data.polygons), "uvs": len(uvs)}


@check
def non_mesh_objects(_) -> list:
    """Curve, text and empty selected: both image operators refuse with the objects' names, scene unchanged. With a
    mesh in the selection the mesh gets the material and the others are left alone."""
    messages = []
    select("Curve", "Text", "Empty")
    before = snapshot()
    for op in (bpy.ops.imagen.apply_material, bpy.ops.imagen.project_from_camera):
        message = expect_error(op, "None of the selected objects is a mesh")
        assert all(name in message for name in ("Curve", "Text", "Empty")), message
        messages.append(message)
    assert snapshot() == before
    text = bpy.data.objects["Text"]
    select("BarePlane", "Text")
    assert bpy.ops.imagen.apply_material() == {"FINISHED"}
    assert len(text.material_slots) == 0 and bpy.data.objects["BarePlane"].active_material is not None
    return messages


# ---- output folder -------------------------------------------------------------------------------------------------
def _refused_before_submitting(folder: str) -> str:
    use_runtime()
    s = settings()
    s.prompt, s.steps = "a brick wall", 2
    prefs().output_dir = folder
    before, requests = snapshot(), len(FAKE.requests)
    try:
        message = expect_error(bpy.ops.imagen.generate, "output folder")
    finally:
        prefs().output_dir = ""
    assert "Traceback" not in message and "Output Folder" in message, message
    assert snapshot() == before
    assert not [r for r in FAKE.requests[requests:] if r[1] == "/v1/jobs"], "a job was submitted anyway"
    return message


@check
def read_only_output_folder(_) -> str:
    folder = os.environ.get("IMAGEN_TEST_RO_DIR")
    if not folder:
        raise Skip("no read-only folder could be made here (root without mount rights)")
    return _refused_before_submitting(folder)


@check
def output_folder_cannot_be_created(_) -> str:
    blocker = WORK / "a-file"
    blocker.write_text("not a folder")
    return _refused_before_submitting(str(blocker / "images"))


# ---- disabling the extension ---------------------------------------------------------------------------------------
def use_local_fake_runtime(log_dir: Path) -> None:
    """LOCAL mode whose launcher starts `reliability_serve` (real server, slow fake model) from this interpreter."""
    launcher_module = sys.modules[f"{PKG}.imagen_addon.runtime.launcher"]
    mod("worker").RuntimeLauncher = functools.partial(
        launcher_module.RuntimeLauncher, module="reliability_serve", ready_timeout=120,
        extra_args=["--output", str(WORK / "runtime-out")])
    os.environ.update(IMAGEN_FAKE_STEP_DELAY="0.02", IMAGEN_FAKE_LOG=str(log_dir))
    log_dir.mkdir(exist_ok=True)
    p = prefs()
    p.runtime_mode, p.auto_start, p.python_path, p.model_dir = "LOCAL", True, sys.executable, str(WORK)


def disable_capturing_errors() -> str:
    """Disable the extension; return whatever was printed to stderr or raised in threads meanwhile."""
    captured, real_stderr, real_hook = io.StringIO(), sys.stderr, threading.excepthook
    threading.excepthook = lambda args: captured.write(f"thread {args.thread}: {args.exc_value!r}\n")
    sys.stderr = captured
    try:
        result = bpy.ops.preferences.addon_disable(module=PKG)
    finally:
        sys.stderr = real_stderr
    assert result == {"FINISHED"} and PKG not in bpy.context.preferences.addons, result
    assert not hasattr(bpy.types.Scene, "imagen")
    task_ended = wait_until(lambda: not [t for t in threading.enumerate() if t.name == "imagen-task"], 60)
    threading.excepthook = real_hook
    assert task_ended, "the generation thread is still running"
    return captured.getvalue()


def reenable() -> None:
    bpy.ops.preferences.addon_enable(module=PKG)
    assert PKG in bpy.context.preferences.addons


@check
def disable_during_generation(_) -> dict:
    """A generation runs in a local runtime the add-on started; disabling the extension stops that process (pid
    gone, no child left), raises nothing, and the generation thread ends."""
    log_dir = WORK / "log-generation"
    use_local_fake_runtime(log_dir)
    jobs = mod("jobs")
    jobs.FORCE_THREAD = True
    try:
        settings().prompt, settings().steps = "a long generation", 250
        assert bpy.ops.imagen.generate() == {"FINISHED"} and jobs.busy()
        assert wait_until(lambda: (log_dir / "started.log").exists(), 120), "the runtime never started the job"
        launcher = mod("worker").launcher_for(mod("preferences").runtime_config())
        pid = launcher.recorded().pid
        assert live_children() == [pid], live_children()
        errors = disable_capturing_errors()
    finally:
        jobs.FORCE_THREAD = False
    pid_alive = sys.modules[f"{PKG}.imagen_addon.runtime.launcher"].pid_alive
    assert wait_until(lambda: not pid_alive(pid), 20), f"runtime {pid} still running"
    assert live_children() == [], live_children()
    assert "Traceback" not in errors and "thread" not in errors, errors
    reenable()
    return {"pid": pid, "stderr": errors[-500:]}


@check
def disable_while_connecting(_) -> dict:
    """Disable the extension while the generation thread is still connecting (here: a runtime recorded by an
    earlier session that no longer answers in time, so the thread goes on to start a new one): no runtime process
    may be started once the extension is gone."""
    hung = FakeRuntime(token="hung-token-0123456789", delay=4.0).start()  # answers after the 3 s health timeout
    try:
        use_local_fake_runtime(WORK / "log-connecting")
        config = mod("preferences").runtime_config()
        Path(config.state_dir, "runtime.json").write_text(json.dumps({  # alive (our own pid), but hung
            "url": hung.url, "token": hung.token, "pid": os.getpid(), "python": sys.executable, "model": str(WORK)}))
        jobs = mod("jobs")
        jobs.FORCE_THREAD = True
        try:
            settings().prompt, settings().steps = "started while connecting", 10
            assert bpy.ops.imagen.generate() == {"FINISHED"}
            assert wait_until(lambda: any(p == "/v1/health" for _, p, _ in hung.requests), 30)
            errors = disable_capturing_errors()
        finally:
            jobs.FORCE_THREAD = False
        orphans = live_children()
        for pid in orphans:  # leave nothing behind whatever the outcome
            os.kill(pid, signal.SIGKILL)
        assert orphans == [], f"runtime process(es) {orphans} started after the extension was disabled"
        assert "Traceback" not in errors and "thread" not in errors, errors
        assert not any(p == "/v1/jobs" for _, p, _ in hung.requests)
    finally:
        hung.stop()
    reenable()
    return {"health_requests": len(hung.requests), "stderr": errors[-500:]}


def main() -> int:
    zip_path, report_path = sys.argv[-2], sys.argv[-1]
    report = {}
    assert sorted(ORDER) == sorted(CHECKS), set(ORDER) ^ set(CHECKS)
    FAKE.start()
    try:
        for fn in (CHECKS[name] for name in ORDER):
            try:
                report[fn.__name__] = {"ok": True, "detail": fn(zip_path)}
            except Skip as reason:
                report[fn.__name__] = {"ok": True, "skipped": str(reason)}
            except Exception:  # noqa: BLE001 (recorded for the pytest side)
                report[fn.__name__] = {"ok": False, "detail": traceback.format_exc()}
                if fn.__name__ in ("install", "build_scene"):
                    break
    finally:
        FAKE.stop()
        for pid in live_children():
            os.kill(pid, signal.SIGKILL)
        Path(report_path).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
