"""bpy glue that reads and changes scene data: images, worlds, materials (with PBR maps), UVs, viewport capture,
scene description.

Everything here runs on the main thread. The decisions (node layouts, UV maths, prompt wording) are in logic.py.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Iterator

import bpy

from . import image_logic, logic, scene_logic

PROJECTION_UV = "Imagen Camera"
TEXTURED_TYPES = {"MESH"}


# --- images ---------------------------------------------------------------------------------------------------


def write_new_file(folder: str, name: str, data: bytes) -> str:
    """Write `data` to a new file `name` in `folder`, or name-2, name-3, ... when that is taken: never over an
    existing file (an upscale done in the same second as its source has the same prompt and seed, so the same
    name). On an error (a full disk) no partial file is left. Returns the path."""
    base, ext = os.path.splitext(name)
    for n in range(1, 1000):
        path = os.path.join(folder, base + (f"-{n}" if n > 1 else "") + ext)
        try:
            fh = open(path, "xb")
        except FileExistsError:
            continue
        try:
            with fh:
                fh.write(data)
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(path)
            raise
        return path
    raise RuntimeError(f"Could not find a free file name for {name} in {folder}")


def load_result_image(png: bytes, record: dict[str, Any], folder: str) -> bpy.types.Image:
    """Save the PNG as a new file in `folder`, load it as an image datablock carrying the history record."""
    path = write_new_file(folder, logic.output_filename(record["prompt"], record.get("seed")), png)
    image = bpy.data.images.load(path, check_existing=False)
    image.name = logic.image_name(record["prompt"] or record.get("mode", "image"))
    for key, value in logic.image_custom_props(record).items():
        image[key] = value
    return image


def show_in_image_editors(image: bpy.types.Image) -> int:
    """Show `image` in every open Image Editor; returns how many."""
    shown = 0
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                shown += 1
    return shown


def history_images() -> list[tuple[bpy.types.Image, dict[str, Any]]]:
    """Generated images (newest first) with their history records."""
    items = []
    for image in bpy.data.images:
        record = logic.record_from_custom_props(dict(image.items()))
        if record is not None:
            items.append((image, record))
    items.sort(key=lambda item: item[1].get("created", ""), reverse=True)
    return items


# --- node trees -----------------------------------------------------------------------------------------------


def apply_node_plan(tree: Any, plan: scene_logic.NodePlan, image: bpy.types.Image | None) -> None:
    """Create or reuse the plan's nodes (by name), set their values and links. Other nodes are left alone."""
    nodes = tree.nodes
    for spec in plan.nodes:
        node: Any = nodes.get(spec.name)
        if node is not None and node.bl_idname != spec.type:
            nodes.remove(node)
            node = None
        if node is None:
            node = nodes.new(spec.type)
            node.name = spec.name
        node.location = spec.location
        for attr, value in spec.props.items():
            setattr(node, attr, value)
        for socket, value in spec.inputs.items():
            node.inputs[socket].default_value = value
        if spec.image:
            node.image = image
    for from_node, output, to_node, input_ in plan.links:
        tree.links.new(nodes[from_node].outputs[output], nodes[to_node].inputs[input_])


def _use_nodes(idblock: Any) -> None:
    if bpy.app.version < (5, 0, 0) and not idblock.use_nodes:  # always on (and deprecated) from Blender 5.0
        idblock.use_nodes = True


def _uses_nodes(idblock: Any) -> bool:
    return idblock.node_tree is not None and (bpy.app.version >= (5, 0, 0) or idblock.use_nodes)


def set_world_image(scene: bpy.types.Scene, image: bpy.types.Image, strength: float = 1.0) -> bpy.types.World:
    world = scene.world
    if world is None:
        world = bpy.data.worlds.new("Imagen World")
        scene.world = world
    _use_nodes(world)
    apply_node_plan(world.node_tree, scene_logic.world_node_plan(strength), image)
    return world


def ensure_material(image: bpy.types.Image, scale: float, projected: bool = False) -> bpy.types.Material:
    """The material of `image` (reused on a second apply), its nodes updated to the plan."""
    name = scene_logic.material_name(image.name, projected)
    material = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    _use_nodes(material)
    plan = (scene_logic.material_node_plan(1.0, uv_map=PROJECTION_UV, extension="EXTEND") if projected
            else scene_logic.material_node_plan(scale))
    apply_node_plan(material.node_tree, plan, image)
    material["imagen_image"] = image.name
    normal, roughness = pbr_map(image, "normal"), pbr_map(image, "roughness")
    if normal is not None and roughness is not None:
        connect_pbr_maps(material, image, normal, roughness)
    return material


PBR_KIND, PBR_SOURCE = "imagen_pbr", "imagen_pbr_source"  # custom properties of a map image (see image_ops)


def pbr_map(source: bpy.types.Image, kind: str) -> bpy.types.Image | None:
    """The `kind` ("normal", "roughness") map made from `source` by Make PBR Maps, if any."""
    return next((i for i in bpy.data.images if i.get(PBR_KIND) == kind and i.get(PBR_SOURCE) == source.name), None)


def load_pbr_map(source: bpy.types.Image, kind: str, path: str) -> bpy.types.Image:
    """The `kind` map image of `source` from its file at `path` (the image of an earlier run is reloaded)."""
    image = pbr_map(source, kind)
    if image is None:
        image = bpy.data.images.load(path, check_existing=False)
        image.name = image_logic.map_image_name(source.name, kind)
        image[PBR_KIND], image[PBR_SOURCE] = kind, source.name
    else:
        image.filepath = path
        image.reload()
    image.colorspace_settings.name = "Non-Color"
    return image


def connect_pbr_maps(material: bpy.types.Material, source: bpy.types.Image, normal: bpy.types.Image,
                     roughness: bpy.types.Image) -> bool:
    """Add the maps to `material` when it is an Imagen material (material_node_plan) showing `source`; reuses
    the nodes of an earlier run. Returns whether it did."""
    tree: Any = material.node_tree
    if material.library is not None or tree is None:
        return False
    nodes = tree.nodes
    texture = nodes.get("Imagen Texture")
    if (texture is None or getattr(texture, "image", None) != source or "Imagen Mapping" not in nodes
            or "Principled BSDF" not in nodes):
        return False
    uv = nodes.get("Imagen UV")
    uv_map = uv.uv_map if uv is not None and uv.bl_idname == "ShaderNodeUVMap" else ""
    apply_node_plan(tree, scene_logic.pbr_node_plan(texture.extension, uv_map), None)
    nodes[scene_logic.PBR_NORMAL_TEXTURE].image = normal
    nodes[scene_logic.PBR_ROUGHNESS_TEXTURE].image = roughness
    return True


def assign_material(obj: bpy.types.Object, material: bpy.types.Material) -> None:
    """Put `material` in the active slot (adding a slot to an object without materials)."""
    if not obj.material_slots:
        obj.data.materials.append(material)
    else:
        obj.material_slots[int(obj.active_material_index or 0)].material = material


# --- UVs ------------------------------------------------------------------------------------------------------


def ensure_uvs(mesh: bpy.types.Mesh) -> bool:
    """Give a mesh without UVs a box-projected UV map. Returns True when one was added."""
    if mesh.uv_layers:
        return False
    layer = mesh.uv_layers.new(name="UVMap")
    if layer is None:
        raise RuntimeError(f"Could not add a UV map to {mesh.name}")
    if not mesh.vertices:
        return True
    xs, ys, zs = zip(*(_vec3(v.co) for v in mesh.vertices))
    lo, hi = (min(xs), min(ys), min(zs)), (max(xs), max(ys), max(zs))
    for poly in mesh.polygons:
        for loop_index in poly.loop_indices:
            co = mesh.vertices[mesh.loops[loop_index].vertex_index].co
            layer.data[loop_index].uv = scene_logic.box_uv(_vec3(co), _vec3(poly.normal), lo, hi)
    return True


MAX_UV_MAPS = 8


def can_project(obj: bpy.types.Object) -> bool:
    """Whether `obj` has (or can get) the `Imagen Camera` UV map."""
    uv_layers = getattr(obj.data, "uv_layers", None)
    return uv_layers is not None and (PROJECTION_UV in uv_layers or len(uv_layers) < MAX_UV_MAPS)


def project_uvs_from_camera(scene: bpy.types.Scene, camera: bpy.types.Object, obj: bpy.types.Object,
                            image_aspect: float) -> None:
    """UV map `Imagen Camera` on `obj`: each vertex where the active camera sees it (image covers the frame)."""
    from bpy_extras.object_utils import world_to_camera_view

    render = scene.render
    frame_aspect = (render.resolution_x * render.pixel_aspect_x) / max(1e-9, render.resolution_y * render.pixel_aspect_y)
    mesh = obj.data
    layer = mesh.uv_layers.get(PROJECTION_UV) or mesh.uv_layers.new(name=PROJECTION_UV)
    if layer is None:
        raise RuntimeError(f"{obj.name} has the maximum number of UV maps; remove one first")
    matrix = obj.matrix_world
    uvs = [scene_logic.camera_uv(_vec3(world_to_camera_view(scene, camera, matrix @ v.co)), frame_aspect, image_aspect)
           for v in mesh.vertices]
    for loop in mesh.loops:
        layer.data[loop.index].uv = uvs[loop.vertex_index]


# --- scene description -------------------------------------------------------------------------------------------


def _vec3(value: Any) -> tuple[float, float, float]:
    """First three components of a Vector / colour / bpy array as plain floats."""
    return float(value[0]), float(value[1]), float(value[2])


def image_size(image: bpy.types.Image) -> tuple[int, int]:
    size: Any = image.size
    return int(size[0]), int(size[1])


def _principled_base_color(material: bpy.types.Material | None) -> tuple[float, float, float] | None:
    if material is None:
        return None
    if _uses_nodes(material):
        for node in material.node_tree.nodes:
            if node.bl_idname == "ShaderNodeBsdfPrincipled":
                socket: Any = node.inputs["Base Color"]
                return None if socket.is_linked else _vec3(socket.default_value)
    return _vec3(material.diffuse_color)


def world_color(world: bpy.types.World | None) -> tuple[float, float, float] | None:
    if world is None:
        return None
    if _uses_nodes(world):
        for node in world.node_tree.nodes:
            if node.bl_idname == "ShaderNodeBackground":
                socket: Any = node.inputs["Color"]
                return None if socket.is_linked else _vec3(socket.default_value)
    return _vec3(world.color)


def describe(scene: bpy.types.Scene) -> tuple[list[scene_logic.SceneObject], tuple[float, float, float] | None]:
    objects = []
    for obj in scene.objects:
        if obj.hide_render or obj.hide_get():
            continue
        material = obj.active_material if obj.type in TEXTURED_TYPES else None
        objects.append(scene_logic.SceneObject(obj.name, obj.type, _principled_base_color(material)))
    return objects, world_color(scene.world)


# --- viewport capture --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def temporarily(obj: Any, **values: Any) -> Iterator[None]:
    """Set attributes for the duration of a block and restore them after, even on error."""
    saved = {name: getattr(obj, name) for name in values}
    try:
        for name, value in values.items():
            setattr(obj, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(obj, name, value)


def capture_view(context: bpy.types.Context, width: int, height: int) -> bytes:
    """PNG bytes of what the user sees: the 3D viewport (OpenGL render) in the UI, a camera render in background.

    Render settings are restored afterwards, so the scene is unchanged.
    """
    scene = context.scene
    assert scene is not None
    render = scene.render
    path = os.path.join(tempfile.gettempdir(), f"imagen_view_{os.getpid()}.png")
    size = {"resolution_x": width, "resolution_y": height, "resolution_percentage": 100}
    with temporarily(render, filepath=path, **size), temporarily(render.image_settings, file_format="PNG"):
        if not bpy.app.background and context.area is not None and context.area.type == "VIEW_3D":
            bpy.ops.render.opengl(write_still=False, view_context=True)
            bpy.data.images["Render Result"].save_render(path, scene=scene)
        else:
            if scene.camera is None:
                raise RuntimeError("The scene has no active camera to render the view from")
            _render_still(scene)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)


def _render_still(scene: bpy.types.Scene) -> None:
    """Background mode: Workbench when it works here (it needs a GPU context), else a 4-sample Cycles CPU render."""
    render = scene.render
    try:
        with temporarily(render, engine="BLENDER_WORKBENCH"):
            bpy.ops.render.render(write_still=True)
        return
    except RuntimeError:
        pass
    with temporarily(render, engine="CYCLES"), temporarily(getattr(scene, "cycles"), samples=4, device="CPU"):
        bpy.ops.render.render(write_still=True)
