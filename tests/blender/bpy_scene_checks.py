"""In-Blender checks of the scene operators: describe, world, material, camera projection, generate from view,
upscale and PBR maps.

Run by bpy_extension_checks.py (which installs the extension and builds the test scene first).
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
from array import array

import bpy
from bpy_checks_common import (
    FAKE, NATIVE, REAL, check, expect_error, last_job_body, mod, select, settings, snapshot,
)


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


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@check
def upscale_image(_) -> dict:
    """A generated image is sent as its file and upscaled with its own prompt; a painted one (no file) as a PNG of
    its pixels, with the panel's prompt."""
    s = settings()
    s.prompt, s.use_native_size, s.width, s.height = "a small red tile", False, 16, 16
    try:
        bpy.ops.imagen.generate()
        source = s.image
        width, height = source.size
        s.prompt = "something else entirely"
        count, t0 = len(bpy.data.images), time.monotonic()
        assert bpy.ops.imagen.upscale() == {"FINISHED"}
        seconds = round(time.monotonic() - t0, 2)
        big = s.image
        assert big != source and len(bpy.data.images) == count + 1
        assert big["imagen_mode"] == "upscale" and big["imagen_prompt"] == "a small red tile"
        factor = big.size[0] // width
        assert factor >= 2 and tuple(big.size) == (width * factor, height * factor), (tuple(big.size), factor)
        assert os.path.isfile(bpy.path.abspath(big.filepath)) and source.name in bpy.data.images
        assert big.filepath != source.filepath  # same prompt, seed and second: a new file, not over the source
        sent = last_job_body()
        if sent is not None:
            with open(bpy.path.abspath(source.filepath), "rb") as fh:
                assert base64.b64decode(sent["init_image"]) == fh.read()  # the file as generated
            assert (sent["mode"], sent["prompt"], sent["tiling"]) == ("upscale", "a small red tile", "none")
            assert not {"width", "height", "panorama", "strength"} & sent.keys(), sorted(sent)
        painted = bpy.data.images.new("Imagen Test Painted", 16, 8)
        painted.pixels.foreach_set([v for i in range(16 * 8) for v in (i % 16 / 15, 0.5, 0.2, 1.0)])
        s.image = painted
        assert bpy.ops.imagen.upscale() == {"FINISHED"}
        assert s.image["imagen_prompt"] == "something else entirely"
        assert tuple(s.image.size) == (16 * factor, 8 * factor), tuple(s.image.size)
        sent = last_job_body()
        if sent is not None:
            png = base64.b64decode(sent["init_image"])
            assert png.startswith(PNG_MAGIC) and _png_size(png) == (16, 8)
    finally:
        s.use_native_size = True
    return {"factor": factor, "seconds": seconds}


@check
def pbr_maps(_) -> dict:
    """Maps of the brick image: saved next to it, Non-Color, wired into both of its materials; a second run
    reuses everything; a material made afterwards gets them too."""
    s = settings()
    plane, cube = bpy.data.objects["Plane"], bpy.data.objects["Cube"]
    flat, projected = plane.active_material, cube.active_material  # Apply to Selected, Project from Camera
    image = flat.node_tree.nodes["Imagen Texture"].image
    assert projected.node_tree.nodes["Imagen Texture"].image == image and projected != flat
    s.image = image
    images, materials = len(bpy.data.images), len(bpy.data.materials)
    t0 = time.monotonic()
    assert bpy.ops.imagen.pbr_maps() == {"FINISHED"}
    seconds = round(time.monotonic() - t0, 2)
    normal, rough = bpy.data.images[image.name + " Normal"], bpy.data.images[image.name + " Roughness"]
    assert (len(bpy.data.images), len(bpy.data.materials)) == (images + 2, materials)
    folder = os.path.dirname(bpy.path.abspath(image.filepath))
    for kind, map_image in (("normal", normal), ("roughness", rough)):
        path = bpy.path.abspath(map_image.filepath)
        assert os.path.dirname(path) == folder and path.endswith(f"_{kind}.png"), path
        with open(path, "rb") as fh:
            assert fh.read(8) == PNG_MAGIC
        assert map_image.colorspace_settings.name == "Non-Color" and tuple(map_image.size) == tuple(image.size)
    assert not [name for name in os.listdir(folder) if name.endswith(".tmp")]
    pixels = array("f", [0.0]) * (len(normal.pixels))
    normal.pixels.foreach_get(pixels)
    assert min(pixels[2::4]) >= 0.5  # every normal faces out of the surface
    links = {}
    for material, uv_map in ((flat, ""), (projected, "Imagen Camera")):
        tree = material.node_tree
        nodes = tree.nodes
        texture, normal_map, roughness = (nodes["Imagen Normal Texture"], nodes["Imagen Normal Map"],
                                          nodes["Imagen Roughness Texture"])
        assert texture.image == normal and roughness.image == rough
        assert texture.outputs["Color"].links[0].to_node == normal_map
        out = normal_map.outputs["Normal"].links[0]
        assert (out.to_node.name, out.to_socket.name) == ("Principled BSDF", "Normal")
        assert roughness.outputs["Color"].links[0].to_socket.name == "Roughness"
        for tex in (texture, roughness):
            assert tex.inputs["Vector"].links[0].from_node.name == "Imagen Mapping"
            assert tex.extension == nodes["Imagen Texture"].extension
        assert normal_map.uv_map == uv_map and normal_map.space == "TANGENT"
        links[material.name] = (len(nodes), len(tree.links))
    bpy.ops.imagen.pbr_maps()  # again: same images, same nodes
    assert (len(bpy.data.images), len(bpy.data.materials)) == (images + 2, materials)
    assert bpy.data.images[image.name + " Normal"] == normal and normal.filepath and rough.colorspace_settings.is_data
    assert {m.name: (len(m.node_tree.nodes), len(m.node_tree.links)) for m in (flat, projected)} == links
    bpy.data.materials.remove(flat)
    select("Plane")
    bpy.ops.imagen.apply_material()
    assert plane.active_material.node_tree.nodes["Imagen Normal Texture"].image == normal
    return {"size": tuple(image.size), "seconds": seconds}


@check
def upscale_and_pbr_refusals(_) -> None:
    s = settings()
    keep, requests = s.image, len(FAKE.requests)
    missing = bpy.data.images.new("Imagen Test Missing", 8, 8)
    missing.source = "FILE"
    missing.filepath = os.path.join(tempfile.gettempdir(), "imagen-no-such-file.png")
    try:
        s.image = None
        before = snapshot()
        expect_error(bpy.ops.imagen.upscale, "Generate an image first")
        expect_error(bpy.ops.imagen.pbr_maps, "Generate an image first")
        s.image = missing
        expect_error(bpy.ops.imagen.upscale, "has no pixels: its file")
        expect_error(bpy.ops.imagen.pbr_maps, "has no pixels: its file")
        assert snapshot() == before and len(FAKE.requests) == requests
        if not REAL:
            FAKE.sr_factor = 1
            s.image = keep
            expect_error(bpy.ops.imagen.upscale, "no super-resolution stage")
            assert snapshot() == before
    finally:
        FAKE.sr_factor = 2
        s.image = keep
        bpy.data.images.remove(missing)
