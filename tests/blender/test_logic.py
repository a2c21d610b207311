"""Pure logic of the add-on (imagen_addon/blender/logic.py): plain pytest, no bpy."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from imagen_addon.blender import logic, scene_logic
from imagen_addon.blender.logic import RequestError
from imagen_addon.blender.scene_logic import SceneObject

BASE = {"prompt": "a brick wall", "negative_prompt": "", "seed": 5, "random_seed": False, "steps": 20,
        "sampler": "ddim", "guidance_scale": 4.0, "use_native_size": True, "width": 256, "height": 128,
        "tiling": "xy", "panorama": False, "strength": 0.6}


def test_logic_imports_without_bpy():
    code = ("import sys; sys.modules['bpy'] = None; import imagen_addon.blender.logic, imagen_addon.blender.scene_logic, imagen_addon.blender.worker;"
            "import imagen_addon.blender.image_logic;"
            "import imagen_addon.blender; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("package, expected", [
    ("bl_ext.user_default.imagen.imagen_addon.blender", "bl_ext.user_default.imagen"),
    ("bl_ext.blender_org.imagen.imagen_addon.blender", "bl_ext.blender_org.imagen"),
    ("imagen.imagen_addon.blender", "imagen"),
])
def test_addon_package(package, expected):
    assert logic.addon_package(package) == expected


def test_addon_package_rejects_other_layouts():
    for bad in ("imagen_addon.blender", "bl_ext.user_default.imagen.other"):
        with pytest.raises(ValueError):
            logic.addon_package(bad)


def test_build_request_text2img():
    request = logic.build_request(BASE)
    assert request == {"mode": "text2img", "prompt": "a brick wall", "negative_prompt": "", "seed": 5, "steps": 20,
                       "sampler": "ddim", "guidance_scale": 4.0, "tiling": "xy"}


def test_build_request_sizes_snap_and_clamp():
    request = logic.build_request({**BASE, "use_native_size": False, "width": 203, "height": 5000})
    assert (request["width"], request["height"]) == (200, 1024)


def test_build_request_panorama_is_2_to_1_and_tiles_x():
    request = logic.build_request({**BASE, "panorama": True, "use_native_size": False, "height": 700})
    assert request["panorama"] is True and request["tiling"] == "x"
    assert request["height"] == 512 and "width" not in request  # the server makes width = 2 * height <= 1024


def test_random_seed_is_drawn_client_side():
    a = logic.build_request({**BASE, "random_seed": True}, rng=random.Random(1))
    b = logic.build_request({**BASE, "random_seed": True}, rng=random.Random(1))
    assert a["seed"] == b["seed"] and 0 <= a["seed"] <= logic.MAX_SEED


@pytest.mark.parametrize("settings, mode, message", [
    ({**BASE, "prompt": "  "}, "text2img", "Enter a prompt"),
    ({**BASE, "prompt": "x" * 1001}, "text2img", "too long"),
    ({**BASE, "negative_prompt": "x" * 1001}, "text2img", "Negative prompt is too long"),
    (BASE, "img2img", "needs an init image"),
])
def test_build_request_refusals(settings, mode, message):
    with pytest.raises(RequestError, match=message):
        logic.build_request(settings, mode=mode)


def test_build_request_img2img():
    request = logic.build_request({**BASE, "strength": 1.7}, mode="img2img", init_image=b"png")
    assert request["init_image"] == b"png" and request["strength"] == 1.0 and request["mode"] == "img2img"


def test_upscale_request_uses_the_image_prompt_and_no_size():
    settings = {**BASE, "prompt": "the next idea", "negative_prompt": "blurry", "use_native_size": False,
                "panorama": True, "strength": 0.3}
    record = logic.history_record(logic.build_request(BASE))
    request = logic.upscale_request(settings, b"png", record)
    assert request == {"mode": "upscale", "prompt": "a brick wall", "negative_prompt": "", "seed": 5, "steps": 20,
                       "sampler": "ddim", "guidance_scale": 4.0, "tiling": "xy", "init_image": b"png"}
    assert logic.upscale_request(settings, b"png")["prompt"] == "the next idea"  # no history: the panel's
    assert logic.upscale_request({**settings, "prompt": " "}, b"png")["prompt"] == ""  # upscale needs no prompt
    with pytest.raises(RequestError, match="needs an init image"):
        logic.upscale_request(settings, b"", record)


def test_upscale_request_keeps_a_seamless_image_seamless():
    """The tiling comes from the image's own record (a panorama's is "x"), never from the panel."""
    for generated, tiling in (({"tiling": "xy"}, "xy"), ({"panorama": True}, "x"), ({"tiling": "none"}, "none")):
        record = logic.history_record(logic.build_request({**BASE, **generated}))
        request = logic.upscale_request({**BASE, "tiling": "x", "panorama": True}, b"png", record)
        assert request["tiling"] == tiling and "panorama" not in request, (generated, request)
    assert logic.upscale_request({**BASE, "tiling": "xy"}, b"png")["tiling"] == "none"  # no record: plain


def test_capture_size():
    assert logic.capture_size(1920, 1080, BASE) == (512, 288)
    assert logic.capture_size(1920, 1080, {**BASE, "use_native_size": False, "width": 64, "height": 48}) == (64, 48)


def test_url_policy():
    assert logic.check_url_allowed("http://127.0.0.1:8000", online_access=False) is None
    assert logic.check_url_allowed("localhost:8000", online_access=False) is None
    assert logic.check_url_allowed("https://gpu.example.org", online_access=True) is None
    message = logic.check_url_allowed("https://gpu.example.org", online_access=False)
    assert "Online access is disabled" in message and "gpu.example.org" in message


def test_color_names_use_linear_input():
    assert scene_logic.color_name((0.8, 0.02, 0.02)) == "red"
    assert scene_logic.color_name((0.05, 0.2, 0.9)) == "blue"
    assert scene_logic.color_name((0.21, 0.21, 0.21)) == "grey"  # linear 0.21 is sRGB ~0.5
    assert scene_logic.color_name((1, 1, 1)) == "white"


def test_object_noun():
    assert scene_logic.object_noun("Cube.001") == "cube"
    assert scene_logic.object_noun("OakTree_big") == "oak tree big"
    assert scene_logic.object_noun("123") == "object"


def test_compose_scene_prompt():
    objects = [SceneObject("Cube", "MESH", (0.8, 0.02, 0.02)), SceneObject("Sphere", "MESH", (0.05, 0.2, 0.9)),
               SceneObject("Sphere.001", "MESH", (0.05, 0.2, 0.9)), SceneObject("Plane"), SceneObject("Apple"),
               SceneObject("Camera", "CAMERA"), SceneObject("Light", "LIGHT")]
    prompt = scene_logic.compose_scene_prompt(objects, world_color=(0.3, 0.55, 0.9))
    assert prompt == ("a red cube, two blue spheres, a plane and an apple on a light blue background, "
                      "3d render, soft lighting")
    assert scene_logic.compose_scene_prompt([SceneObject("Light", "LIGHT")]) == ""
    assert scene_logic.compose_scene_prompt([SceneObject("Box")] * 3, style="") == "three boxes"


def test_world_node_plan():
    plan = scene_logic.world_node_plan(2.0)
    env = plan.node("Imagen Environment")
    assert env.type == "ShaderNodeTexEnvironment" and env.image and env.props["projection"] == "EQUIRECTANGULAR"
    assert plan.node("Imagen Background").inputs == {"Strength": 2.0}
    assert ("Imagen Background", "Background", "World Output", "Surface") in plan.links
    _check_links(plan)


def test_material_node_plans():
    plan = scene_logic.material_node_plan(3.0)
    assert plan.node("Imagen Mapping").inputs["Scale"] == (3.0, 3.0, 1.0)
    assert plan.node("Imagen UV").type == "ShaderNodeTexCoord"
    assert ("Imagen Texture", "Color", "Principled BSDF", "Base Color") in plan.links
    _check_links(plan)
    projected = scene_logic.material_node_plan(uv_map="Imagen Camera", extension="EXTEND")
    assert projected.node("Imagen UV").props == {"uv_map": "Imagen Camera"}
    assert projected.node("Imagen Texture").props == {"extension": "EXTEND"}
    _check_links(projected)


def test_pbr_node_plan_shares_the_mapping():
    plan = scene_logic.pbr_node_plan("EXTEND", uv_map="Imagen Camera")
    base = scene_logic.material_node_plan(uv_map="Imagen Camera", extension="EXTEND")
    assert {n.name for n in plan.nodes}.isdisjoint({n.name for n in base.nodes})
    assert ("Imagen Mapping", "Vector", "Imagen Normal Texture", "Vector") in plan.links
    assert ("Imagen Mapping", "Vector", "Imagen Roughness Texture", "Vector") in plan.links
    assert ("Imagen Normal Map", "Normal", "Principled BSDF", "Normal") in plan.links
    assert ("Imagen Roughness Texture", "Color", "Principled BSDF", "Roughness") in plan.links
    assert plan.node("Imagen Normal Map").props == {"space": "TANGENT", "uv_map": "Imagen Camera"}
    assert plan.node("Imagen Normal Texture").props["extension"] == "EXTEND"
    _check_links(scene_logic.NodePlan(base.nodes + plan.nodes, base.links + plan.links))  # links inside the union


def _check_links(plan):
    names = {n.name for n in plan.nodes}
    for a, _, b, _ in plan.links:
        assert a in names and b in names


def test_material_names():
    assert scene_logic.material_name("Imagen a wall") == "Imagen a wall"
    assert scene_logic.material_name("photo.png", projected=True) == "Imagen Projection photo.png"
    assert len(scene_logic.material_name("Imagen " + "x" * 100)) <= 63


def test_panorama_warning():
    assert scene_logic.panorama_warning(128, 64) is None
    assert "not a 2:1" in scene_logic.panorama_warning(64, 64)


def test_history_round_trip():
    request = logic.build_request({**BASE, "use_native_size": False}, mode="img2img", init_image=b"png")
    record = logic.history_record(request, {"seed": 5, "width": 256, "height": 128}, created=0)
    assert "init_image" not in record["settings"] and record["seed"] == 5
    props = logic.image_custom_props(record)
    assert props["imagen_prompt"] == "a brick wall" and props["imagen_seed"] == 5
    assert json.loads(props["imagen_settings"])["steps"] == 20
    back = logic.record_from_custom_props(props)
    values = logic.settings_from_record(back)
    assert values == {"prompt": "a brick wall", "negative_prompt": "", "seed": 5, "random_seed": False,
                      "steps": 20, "sampler": "ddim", "guidance_scale": 4.0, "tiling": "xy", "strength": 0.6,
                      "panorama": False, "width": 256, "height": 128, "use_native_size": False}
    assert logic.build_request({**BASE, **values}, mode="img2img", init_image=b"png") == request


def test_history_seed_beyond_int32_is_stored_as_text():
    record = logic.history_record({"prompt": "x"}, {"seed": 2**32 - 1})
    assert logic.image_custom_props(record)["imagen_seed"] == str(2**32 - 1)
    values = logic.settings_from_record(logic.record_from_custom_props(logic.image_custom_props(record)))
    assert "seed" not in values  # cannot go into a 32-bit property; the prompt and settings still come back


def test_record_from_unrelated_props():
    assert logic.record_from_custom_props({"foo": 1}) is None
    assert logic.record_from_custom_props({"imagen_prompt": "x", "imagen_settings": "{broken"})["settings"] == {}


def test_output_filename_and_image_name():
    name = logic.output_filename("A Red/Brick  wall!", 42, created=0)
    assert name.startswith("imagen_") and name.endswith("_42_a-red-brick-wall.png")
    assert logic.output_filename("???", 1, created=0).endswith("_1_image.png")
    assert logic.image_name("one two three four five six seven") == "Imagen one two three four five six"


def test_progress_and_health_text():
    assert logic.progress_text({"status": "queued", "position": 2}) == "Queued (position 2)"
    assert logic.progress_text({"status": "running", "step": 3, "steps": 25, "stage": 1, "stage_count": 2}) == \
        "Step 3/25, stage 2/2"
    assert logic.progress_text({"status": "cancelled"}) == "Cancelled"
    health = {"status": "ok", "device": "cpu", "model": {"hash": "abcdef123456", "native_size": [64, 64]},
              "worker": "ok"}
    assert logic.health_text(health) == "Runtime ready: cpu, model abcdef12, 64x64"
    assert "worker crashed: boom" in logic.health_text({**health, "status": "degraded", "worker": "crashed: boom"})


@pytest.mark.parametrize("view, frame, image, expected", [
    ((0.25, 0.75, 5.0), 1.0, 1.0, (0.25, 0.75)),
    ((0.0, 0.5, 5.0), 1.5, 1.5, (0.0, 0.5)),
    ((0.0, 0.0, 5.0), 1.0, 2.0, (0.25, 0.0)),   # panorama image on a square frame: the middle half is used
    ((1.0, 1.0, 5.0), 2.0, 1.0, (1.0, 0.75)),  # square image on a wide frame: the middle half of its height
])
def test_camera_uv(view, frame, image, expected):
    assert scene_logic.camera_uv(view, frame, image) == pytest.approx(expected)


def test_box_uv():
    lo, hi = (-1, -1, -1), (1, 1, 1)
    assert scene_logic.box_uv((1, -1, 1), (0, 0, 1), lo, hi) == (1.0, 0.0)  # top face: x, y
    assert scene_logic.box_uv((1, -1, 1), (1, 0, 0), lo, hi) == (0.0, 1.0)  # side face: y, z
    assert scene_logic.box_uv((0, 0, 0), (0, 0, 1), (0, 0, 0), (0, 0, 0)) == (0.0, 0.0)  # degenerate bbox


def test_runtime_python_paths():
    sys_path = ["/blender/scripts", "/ext/.local/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages/"]
    assert logic.runtime_python_paths("/b/python", "/b/python", sys_path) == tuple(sys_path[1:])
    assert logic.runtime_python_paths("/venv/python", "/b/python", sys_path) == ()


def test_fit_request_to_model():
    health = {"model": {"size_multiple": 64}}
    assert logic.fit_request_to_model({"width": 200, "height": 8}, health) == {"width": 192, "height": 64}
    assert logic.fit_request_to_model({"height": 1000, "panorama": True}, health) == {"height": 512,
                                                                                     "panorama": True}
    assert logic.fit_request_to_model({"prompt": "x"}, health) == {"prompt": "x"}
    assert logic.fit_request_to_model({"width": 36}, {"model": {"size_multiple": 4}}) == {"width": 36}
    assert logic.fit_request_to_model({"width": 38}, {}) == {"width": 40}  # unknown: multiple of 8
