"""Operators that make new images from the current one: Upscale (the runtime's super-resolution stages) and Make
PBR Maps (a normal and a roughness map, computed here in pure Python by image_logic.py).

All checks happen before anything is changed, so a refused operator leaves the scene as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from array import array
import bpy
from bpy.props import FloatProperty

from . import image_logic, jobs, logic, scene as scene_data
from .apply_ops import NO_IMAGE
from .operators import _idle, _start
from .properties import settings_dict

def _has_image(cls, context) -> bool:
    if context.scene is None:
        return False
    if context.scene.imagen.image is None:
        cls.poll_message_set(NO_IMAGE)
        return False
    return True


def image_pixels(image: bpy.types.Image) -> tuple[array, int, int, int]:
    """(pixels as array('f') in Blender's layout, width, height, channels); RuntimeError when it has none."""
    width, height = scene_data.image_size(image)
    if not width or not height:
        path = bpy.path.abspath(image.filepath) if image.filepath else ""
        where = f": its file {path} is missing or unreadable" if path else ""
        raise RuntimeError(f"Image {image.name} has no pixels{where}")
    channels = int(image.channels)
    values = array("f", [0.0]) * (width * height * channels)
    image.pixels.foreach_get(values)
    return values, width, height, channels


def image_file_bytes(image: bpy.types.Image) -> bytes:
    """The image as the runtime takes it: its file when that is unchanged on disk (PNG/JPEG/WebP), else a PNG made
    from its pixels (generated, painted, packed or float images)."""
    path = bpy.path.abspath(image.filepath) if image.source == "FILE" and image.filepath else ""
    if path and image.packed_file is None and not image.is_dirty and os.path.isfile(path):
        with open(path, "rb") as fh:
            data = fh.read()
        if image_logic.image_format(data):
            return data
    values, width, height, channels = image_pixels(image)
    if image.is_float and not image.colorspace_settings.is_data:  # float pixels are scene linear
        return image_logic.encode_png(image_logic.linear_to_srgb(values, channels), width, height, channels)
    return image_logic.encode_png(values, width, height, channels)


class IMAGEN_OT_upscale(bpy.types.Operator):
    bl_idname = "imagen.upscale"
    bl_label = "Upscale"
    bl_description = ("Upscale the image with the model's super-resolution stages (its size times the model's "
                      "factor), guided by the image's own prompt (else the panel's prompt); the result becomes "
                      "the current image")
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _idle(cls, context) and _has_image(cls, context)

    def execute(self, context):
        settings = context.scene.imagen
        image = settings.image
        if image is None:
            self.report({"ERROR"}, NO_IMAGE)
            return {"CANCELLED"}
        record = logic.record_from_custom_props(dict(image.items()))
        try:
            request = logic.upscale_request(settings_dict(settings), image_file_bytes(image), record)
        except (ValueError, RuntimeError, OSError) as err:  # logic.RequestError is a ValueError
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        return _start(self, context, request)


def write_files(files: dict[str, bytes]) -> None:
    """Write every file through a temp file in its folder, then rename them all: after an error while writing,
    no file has changed and no temp file is left."""
    temps: list[tuple[str, str]] = []
    try:
        for path, data in files.items():
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".imagen-", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            with contextlib.suppress(OSError):
                os.remove(tmp)


class IMAGEN_OT_pbr_maps(bpy.types.Operator):
    bl_idname = "imagen.pbr_maps"
    bl_label = "Make PBR Maps"
    bl_description = ("Make a normal map and a roughness map from the image (read as the base colour: brightness "
                      "as height, dark and detailed as rough), save them in the output folder and connect them in "
                      "the image's materials (Apply to Selected, Project from Camera; also ones made later)")
    bl_options = {"REGISTER", "UNDO"}

    strength: FloatProperty(  # type: ignore[valid-type]
        name="Strength", description="How strongly brightness changes tilt the normals (bump depth)",
        default=image_logic.DEFAULT_STRENGTH, min=0.0, soft_max=10.0)

    @classmethod
    def poll(cls, context):
        return _has_image(cls, context)

    def execute(self, context):
        image = context.scene.imagen.image
        if image is None:
            self.report({"ERROR"}, NO_IMAGE)
            return {"CANCELLED"}
        start = time.perf_counter()
        record = logic.record_from_custom_props(dict(image.items())) or {}
        tiling = (record.get("settings") or {}).get("tiling", "none")
        try:
            folder = jobs.writable_output_dir(context)
            values, width, height, channels = image_pixels(image)
            maps = image_logic.make_maps(values, width, height, channels, tiling, self.strength)
            source_path = bpy.path.abspath(image.filepath) if image.source == "FILE" else ""
            paths = {kind: os.path.join(folder, image_logic.map_file_name(source_path, image.name, kind))
                     for kind in image_logic.MAP_KINDS}
            write_files({paths["normal"]: image_logic.encode_png(maps.normal, width, height, 3),
                         paths["roughness"]: image_logic.encode_png(maps.roughness, width, height, 1)})
        except OSError as err:
            self.report({"ERROR"}, f"Could not save the maps in the output folder ({err.strerror or err}): free "
                                   "some space or choose another Output Folder in the add-on preferences")
            return {"CANCELLED"}
        except (ValueError, RuntimeError) as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        normal, roughness = (scene_data.load_pbr_map(image, kind, paths[kind]) for kind in image_logic.MAP_KINDS)
        materials = [m for m in bpy.data.materials if scene_data.connect_pbr_maps(m, image, normal, roughness)]
        used = (f"connected in {', '.join(m.name for m in materials)}" if materials
                else "Apply to Selected will connect them")
        self.report({"INFO"}, f"{normal.name} and {roughness.name} saved in {folder} "
                              f"({time.perf_counter() - start:.1f} s); {used}")
        return {"FINISHED"}


classes = (IMAGEN_OT_upscale, IMAGEN_OT_pbr_maps)
