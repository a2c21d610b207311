"""In-Blender checks of the scene operators: describe, world, material, camera projection, generate from view.

Run by bpy_extension_checks.py (which installs the extension and builds the test scene first).
"""

from __future__ import annotations

import time

import bpy
from bpy_checks_common import NATIVE, check, expect_error, last_job_body, mod, select, settings, snapshot


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
def set_world_panorama(_) -> None:
    s = settings()
    s.prompt, s.panorama = "a sunny sky over hills", True
    bpy.ops.imagen.generate()
    s.panorama = False
    image = s.image
    assert tuple(image.size) == (2 * NATIVE, NATIVE), tuple(image.size)
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
    logic = mod("scene_logic")
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
    plane = bpy.data.objects["Plane"]
    while len(plane.data.uv_layers) < 8:
        plane.data.uv_layers.new(name=f"Extra {len(plane.data.uv_layers)}")
    before = snapshot()
    expect_error(bpy.ops.imagen.project_from_camera, "No free UV map slot (8 used) on: Plane")
    assert snapshot() == before


@check
def generate_from_view(_) -> dict:
    s = settings()
    s.prompt, s.use_native_size, s.width, s.height, s.strength = "a castle", False, 32, 24, 0.55
    before = snapshot()
    t0 = time.monotonic()
    bpy.ops.imagen.generate_from_view()
    assert s.image["imagen_mode"] == "img2img" and s.image["imagen_prompt"] == "a castle"
    sent = last_job_body()
    if sent is not None:
        import base64

        assert sent["mode"] == "img2img" and abs(sent["strength"] - 0.55) < 1e-6 and sent["init_image"]
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
