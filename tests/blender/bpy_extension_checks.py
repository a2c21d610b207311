"""Checks of the installed extension inside real Blender (bpy as a module), run by test_extension.py.

    python bpy_extension_checks.py EXTENSION_ZIP REPORT_JSON

Runs in its own process (bpy is global state and can be imported once) with BLENDER_USER_RESOURCES pointing to a
temporary folder. Each `check_*` function runs in order; the report maps its name to {"ok", "detail"}. The
operators run their synchronous paths against a fake runtime (tests/runtime/fake_imagen_runtime.py) in a thread;
the lead can point the same checks at a real runtime by changing URL and token (env IMAGEN_TEST_RUNTIME_URL/TOKEN).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "runtime"))

import bpy  # noqa: E402
from fake_imagen_runtime import FakeRuntime  # noqa: E402

PKG = "bl_ext.user_default.imagen"
OPERATORS = ("generate", "generate_from_view", "cancel", "describe_scene", "history_reuse", "set_world",
             "apply_material", "project_from_camera", "runtime_start", "runtime_stop", "runtime_check")
PANELS = ("VIEW3D_PT_imagen", "VIEW3D_PT_imagen_settings", "VIEW3D_PT_imagen_use", "VIEW3D_PT_imagen_history")
FAKE = FakeRuntime(token="bpy-test-token", steps=2, native_size=32)
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def mod(name: str):
    return sys.modules[f"{PKG}.imagen_addon.blender.{name}"]


def prefs():
    return bpy.context.preferences.addons[PKG].preferences


def settings():
    return bpy.context.scene.imagen


def use_runtime(url: str | None = None, token: str | None = None) -> None:
    p = prefs()
    p.runtime_mode = "REMOTE"
    p.url = url or os.environ.get("IMAGEN_TEST_RUNTIME_URL") or FAKE.url
    p.token = token if token is not None else os.environ.get("IMAGEN_TEST_RUNTIME_TOKEN", FAKE.token)


def expect_error(op, text: str, **kwargs) -> str:
    try:
        op(**kwargs)
    except RuntimeError as err:
        assert text in str(err), f"expected {text!r} in {err}"
        return str(err)
    raise AssertionError(f"{op.idname_py()} did not report an error containing {text!r}")


def snapshot() -> dict:
    """What a refused operator must leave unchanged."""
    return {
        "images": sorted(i.name for i in bpy.data.images),
        "materials": sorted(m.name for m in bpy.data.materials),
        "uv": {o.name: [uv.name for uv in o.data.uv_layers] for o in bpy.data.objects if o.type == "MESH"},
        "slots": {o.name: [s.material.name if s.material else None for s in o.material_slots] for o in bpy.data.objects},
        "world": bpy.context.scene.world.name if bpy.context.scene.world else None,
        "world_nodes": sorted(n.name for n in bpy.context.scene.world.node_tree.nodes) if bpy.context.scene.world else [],
        "prompt": settings().prompt,
        "render": (bpy.context.scene.render.engine, bpy.context.scene.render.resolution_x,
                   bpy.context.scene.render.filepath),
    }


def select(*names: str) -> None:
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj.name in names)
    if names:
        bpy.context.view_layer.objects.active = bpy.data.objects[names[0]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- checks ------------------------------------------------------------------------------------------------------


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
def describe_scene(_) -> str:
    bpy.ops.imagen.describe_scene()
    prompt = settings().prompt
    assert "red cube" in prompt and "plane" in prompt and "blue background" in prompt, prompt
    assert "sun" not in prompt and "camera" not in prompt, prompt
    return prompt


@check
def describe_empty_scene_is_refused(_) -> None:
    empty = bpy.data.scenes.new("Empty")
    try:
        with bpy.context.temp_override(scene=empty):
            expect_error(bpy.ops.imagen.describe_scene, "Nothing to describe")
            assert empty.imagen.prompt == ""
    finally:
        bpy.data.scenes.remove(empty)


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
    assert image is not None and tuple(image.size) == (32, 32), image
    assert image["imagen_prompt"] == "a red brick wall" and image["imagen_seed"] == 42
    stored = json.loads(image["imagen_settings"])
    assert stored["steps"] == 12 and stored["seed"] == 42, stored
    assert os.path.isfile(bpy.path.abspath(image.filepath)), image.filepath
    sent = [body for method, path, body in FAKE.requests if path == "/v1/jobs"][-1]
    assert sent["prompt"] == "a red brick wall" and sent["seed"] == 42 and sent["mode"] == "text2img"
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
def set_world_panorama(_) -> None:
    s = settings()
    s.prompt, s.panorama = "a sunny sky over hills", True
    bpy.ops.imagen.generate()
    s.panorama = False
    image = s.image
    assert tuple(image.size) == (64, 32), tuple(image.size)
    bpy.ops.imagen.set_world()
    tree = bpy.context.scene.world.node_tree
    env = tree.nodes["Imagen Environment"]
    assert env.bl_idname == "ShaderNodeTexEnvironment" and env.image == image
    assert env.projection == "EQUIRECTANGULAR"
    background = env.outputs["Color"].links[0].to_node
    assert background.bl_idname == "ShaderNodeBackground"
    output = background.outputs["Background"].links[0].to_node
    assert output.bl_idname == "ShaderNodeOutputWorld"
    # Applying again reuses the nodes.
    count = len(tree.nodes)
    bpy.ops.imagen.set_world()
    assert len(tree.nodes) == count


@check
def apply_material_and_reuse(_) -> None:
    s = settings()
    bpy.ops.imagen.history_reuse(image_name=[i for i, r in mod("scene").history_images()
                                             if r["prompt"] == "a red brick wall"][0].name)
    image = s.image
    select("Cube", "Plane", "Sun")
    materials = len(bpy.data.materials)
    s.texture_scale = 2.0
    bpy.ops.imagen.apply_material()
    assert len(bpy.data.materials) == materials + 1
    cube, plane = bpy.data.objects["Cube"], bpy.data.objects["Plane"]
    material = cube.active_material
    assert material is plane.active_material and material.name.startswith("Imagen")
    nodes = material.node_tree.nodes
    assert nodes["Imagen Texture"].image == image
    assert nodes["Imagen Texture"].outputs["Color"].links[0].to_socket.name == "Base Color"
    assert tuple(nodes["Imagen Mapping"].inputs["Scale"].default_value) == (2.0, 2.0, 1.0)
    s.texture_scale = 4.0
    bpy.ops.imagen.apply_material()  # second apply: same material, new scale
    assert len(bpy.data.materials) == materials + 1 and cube.active_material is material
    assert tuple(nodes["Imagen Mapping"].inputs["Scale"].default_value) == (4.0, 4.0, 1.0)
    assert len(bpy.data.objects["Sun"].material_slots) == 0


@check
def apply_material_refusals(_) -> None:
    select()
    before = snapshot()
    expect_error(bpy.ops.imagen.apply_material, "Select one or more mesh objects")
    select("Sun", "Camera")
    expect_error(bpy.ops.imagen.apply_material, "None of the selected objects is a mesh")
    assert snapshot() == before


@check
def project_from_camera(_) -> None:
    from bpy_extras.object_utils import world_to_camera_view

    scene = bpy.context.scene
    select("Cube")
    bpy.ops.imagen.project_from_camera()
    cube = bpy.data.objects["Cube"]
    layer = cube.data.uv_layers["Imagen Camera"]
    width, height = settings().image.size
    frame = scene.render.resolution_x / scene.render.resolution_y
    logic = mod("logic")
    for loop in cube.data.loops:
        co = cube.matrix_world @ cube.data.vertices[loop.vertex_index].co
        expected = logic.camera_uv(world_to_camera_view(scene, scene.camera, co), frame, width / height)
        got = layer.data[loop.index].uv
        assert abs(got[0] - expected[0]) < 1e-5 and abs(got[1] - expected[1]) < 1e-5
    us = [layer.data[i].uv[0] for i in range(len(cube.data.loops))]
    assert 0.2 < min(us) < max(us) < 0.8, (min(us), max(us))  # the cube sits in the middle of the frame
    nodes = cube.active_material.node_tree.nodes
    assert nodes["Imagen UV"].bl_idname == "ShaderNodeUVMap" and nodes["Imagen UV"].uv_map == "Imagen Camera"


@check
def project_refusals(_) -> None:
    scene = bpy.context.scene
    camera, scene.camera = scene.camera, None
    try:
        select("Plane")
        before = snapshot()
        expect_error(bpy.ops.imagen.project_from_camera, "no active camera")
        assert snapshot() == before
    finally:
        scene.camera = camera


@check
def generate_from_view(_) -> dict:
    s = settings()
    s.prompt, s.use_native_size, s.width, s.height, s.strength = "a castle", False, 32, 24, 0.55
    before = snapshot()
    t0 = time.monotonic()
    bpy.ops.imagen.generate_from_view()
    sent = [body for method, path, body in FAKE.requests if path == "/v1/jobs"][-1]
    assert sent["mode"] == "img2img" and abs(sent["strength"] - 0.55) < 1e-6 and sent["init_image"]
    import base64

    png = base64.b64decode(sent["init_image"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 32 and int.from_bytes(png[20:24], "big") == 24
    after = snapshot()
    assert after["render"] == before["render"], (after["render"], before["render"])
    s.use_native_size = True
    return {"seconds": round(time.monotonic() - t0, 2)}


@check
def generate_from_view_without_camera(_) -> None:
    scene = bpy.context.scene
    camera, scene.camera = scene.camera, None
    try:
        before = snapshot()
        expect_error(bpy.ops.imagen.generate_from_view, "no active camera")
        assert snapshot() == before
    finally:
        scene.camera = camera


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
        FAKE.steps = 10_000
        names = {i.name for i in bpy.data.images if "imagen_prompt" in i}
        bpy.ops.imagen.generate()
        time.sleep(0.3)
        bpy.ops.imagen.cancel()
        jobs.drain_all()
        assert jobs.STATE.text == "Cancelled", jobs.STATE.text
        assert {i.name for i in bpy.data.images if "imagen_prompt" in i} == names
    finally:
        FAKE.steps = 2
        jobs.FORCE_THREAD = False


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
    FAKE.start()
    try:
        for fn in CHECKS:
            try:
                detail = fn(zip_path)
                report[fn.__name__] = {"ok": True, "detail": detail}
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
