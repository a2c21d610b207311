"""Operators that use the current image: world background, material on selected objects, camera projection.

All checks happen before anything is changed, so a refused operator leaves the scene as it was.
"""

from typing import cast

import bpy
from bpy.props import StringProperty

from . import scene as scene_data, scene_logic

NO_IMAGE = "Generate an image first (or pick one in the Imagen panel's Image field)"


def _image(op, context) -> bpy.types.Image | None:
    if op.image_name:
        return bpy.data.images.get(op.image_name)
    return context.scene.imagen.image


def _selected_meshes(op, context) -> tuple[list[bpy.types.Object], list[bpy.types.Object]] | None:
    selected = list(context.selected_objects)
    if not selected:
        op.report({"ERROR"}, "Select one or more mesh objects first")
        return None
    meshes = [obj for obj in selected if obj.type == "MESH"]
    skipped = [obj for obj in selected if obj.type != "MESH"]
    if not meshes:
        op.report({"ERROR"}, "None of the selected objects is a mesh: "
                             + ", ".join(obj.name for obj in skipped))
        return None
    return meshes, skipped


def _report_skipped(op, skipped) -> None:
    if skipped:
        op.report({"WARNING"}, "Skipped (not meshes): " + ", ".join(obj.name for obj in skipped))


def _object_mode(cls, context) -> bool:
    if context.mode != "OBJECT":
        cls.poll_message_set("Switch to Object Mode")
        return False
    return context.scene is not None


class IMAGEN_OT_set_world(bpy.types.Operator):
    bl_idname = "imagen.set_world"
    bl_label = "Set as World Background"
    bl_description = ("Use the image as the world background (equirectangular environment; a 2:1 panorama "
                      "wraps around)")
    bl_options = {"REGISTER", "UNDO"}

    image_name: StringProperty(  # type: ignore[valid-type]
        name="Image", description="Image to use (default: the current one)", options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def execute(self, context):
        image = _image(self, context)
        if image is None:
            self.report({"ERROR"}, NO_IMAGE)
            return {"CANCELLED"}
        world = scene_data.set_world_image(context.scene, image)
        warning = scene_logic.panorama_warning(*scene_data.image_size(image))
        if warning:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"{image.name} is the background of world {world.name}")
        return {"FINISHED"}


class IMAGEN_OT_apply_material(bpy.types.Operator):
    bl_idname = "imagen.apply_material"
    bl_label = "Apply to Selected"
    bl_description = ("Apply the image as the base colour of the selected meshes (one shared material, "
                      "repeated by Texture Scale)")
    bl_options = {"REGISTER", "UNDO"}

    image_name: StringProperty(  # type: ignore[valid-type]
        name="Image", description="Image to use (default: the current one)", options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return _object_mode(cls, context)

    def execute(self, context):
        image = _image(self, context)
        if image is None:
            self.report({"ERROR"}, NO_IMAGE)
            return {"CANCELLED"}
        found = _selected_meshes(self, context)
        if found is None:
            return {"CANCELLED"}
        meshes, skipped = found
        material = scene_data.ensure_material(image, context.scene.imagen.texture_scale)
        for obj in meshes:
            scene_data.ensure_uvs(cast(bpy.types.Mesh, obj.data))
            scene_data.assign_material(obj, material)
        _report_skipped(self, skipped)
        self.report({"INFO"}, f"Material {material.name} on {len(meshes)} object(s)")
        return {"FINISHED"}


class IMAGEN_OT_project_from_camera(bpy.types.Operator):
    bl_idname = "imagen.project_from_camera"
    bl_label = "Project from Camera"
    bl_description = ("Project the image onto the selected meshes from the active camera (new UV map "
                      "'Imagen Camera'); best with an image generated from that camera's view")
    bl_options = {"REGISTER", "UNDO"}

    image_name: StringProperty(  # type: ignore[valid-type]
        name="Image", description="Image to use (default: the current one)", options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return _object_mode(cls, context)

    def execute(self, context):
        scene = context.scene
        image = _image(self, context)
        if image is None:
            self.report({"ERROR"}, NO_IMAGE)
            return {"CANCELLED"}
        if scene.camera is None:
            self.report({"ERROR"}, "The scene has no active camera: add one or make one active (Ctrl Numpad 0)")
            return {"CANCELLED"}
        found = _selected_meshes(self, context)
        if found is None:
            return {"CANCELLED"}
        meshes, skipped = found
        full = [obj.name for obj in meshes if not scene_data.can_project(obj)]
        if full:
            self.report({"ERROR"}, "No free UV map slot (8 used) on: " + ", ".join(full))
            return {"CANCELLED"}
        width, height = scene_data.image_size(image)
        aspect = width / height if height else 1.0
        for obj in meshes:
            scene_data.project_uvs_from_camera(scene, scene.camera, obj, aspect)
        material = scene_data.ensure_material(image, 1.0, projected=True)
        for obj in meshes:
            scene_data.assign_material(obj, material)
        _report_skipped(self, skipped)
        self.report({"INFO"}, f"Projected {image.name} from {scene.camera.name} onto {len(meshes)} object(s)")
        return {"FINISHED"}


classes = (IMAGEN_OT_set_world, IMAGEN_OT_apply_material, IMAGEN_OT_project_from_camera)
