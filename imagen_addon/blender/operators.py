"""Generation operators: from prompt, from view, cancel, describe scene, reuse history settings.

Every failure is reported with self.report({'ERROR'}, message) and leaves the scene unchanged.
"""

import bpy
from bpy.props import StringProperty

from . import jobs, logic, scene as scene_data, scene_logic
from .properties import apply_settings, settings_dict


def _idle(cls, context) -> bool:
    if context.scene is None:
        return False
    if jobs.busy():
        cls.poll_message_set("A generation is running")
        return False
    return True


class IMAGEN_OT_generate(bpy.types.Operator):
    bl_idname = "imagen.generate"
    bl_label = "Generate"
    bl_description = "Generate an image from the prompt with the Imagen runtime"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _idle(cls, context)

    def execute(self, context):
        try:
            request = logic.build_request(settings_dict(context.scene.imagen))
        except logic.RequestError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        return _start(self, context, request)


class IMAGEN_OT_generate_from_view(bpy.types.Operator):
    bl_idname = "imagen.generate_from_view"
    bl_label = "Generate from View"
    bl_description = ("Render the current view and use it as the starting image (image-to-image) with the "
                      "prompt; Strength sets how much of it changes")
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _idle(cls, context)

    def execute(self, context):
        settings = settings_dict(context.scene.imagen)
        try:
            logic.build_request(settings, mode="img2img", init_image=b"check")  # validate before rendering
            render = context.scene.render
            width, height = logic.capture_size(render.resolution_x, render.resolution_y, settings)
            png = scene_data.capture_view(context, width, height)
            request = logic.build_request(settings, mode="img2img", init_image=png)
        except (logic.RequestError, RuntimeError, OSError) as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        return _start(self, context, request)


def _start(op: bpy.types.Operator, context, request) -> set[str]:
    error = jobs.generate(context, request)
    if error:
        op.report({"ERROR"}, error)
        return {"CANCELLED"}
    if jobs.use_thread():
        op.report({"INFO"}, "Imagen: generating")
    else:
        op.report({"INFO"}, jobs.STATE.text)
    return {"FINISHED"}


class IMAGEN_OT_cancel(bpy.types.Operator):
    bl_idname = "imagen.cancel"
    bl_label = "Cancel"
    bl_description = "Cancel the running generation"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return jobs.busy()

    def execute(self, context):
        jobs.cancel()
        return {"FINISHED"}


class IMAGEN_OT_describe_scene(bpy.types.Operator):
    bl_idname = "imagen.describe_scene"
    bl_label = "Describe Scene"
    bl_description = "Write a prompt from the scene's objects, their material colours and the world colour"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def execute(self, context):
        objects, world = scene_data.describe(context.scene)
        prompt = scene_logic.compose_scene_prompt(objects, world)
        if not prompt:
            self.report({"ERROR"}, "Nothing to describe: the scene has no visible mesh, curve or text objects")
            return {"CANCELLED"}
        context.scene.imagen.prompt = prompt
        self.report({"INFO"}, f"Prompt: {prompt}")
        return {"FINISHED"}


class IMAGEN_OT_history_reuse(bpy.types.Operator):
    bl_idname = "imagen.history_reuse"
    bl_label = "Use These Settings Again"
    bl_description = "Copy this image's prompt, seed and settings into the Imagen panel, and make it current"
    bl_options = {"REGISTER", "UNDO"}

    image_name: StringProperty(name="Image", options={"SKIP_SAVE"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def execute(self, context):
        image = bpy.data.images.get(self.image_name)
        record = logic.record_from_custom_props(dict(image.items())) if image is not None else None
        if record is None:
            self.report({"ERROR"}, f"No Imagen history on image {self.image_name!r}")
            return {"CANCELLED"}
        settings = context.scene.imagen
        apply_settings(settings, logic.settings_from_record(record))
        settings.image = image
        self.report({"INFO"}, f"Settings of {image.name} restored (seed {record.get('seed')})")
        return {"FINISHED"}


classes = (IMAGEN_OT_generate, IMAGEN_OT_generate_from_view, IMAGEN_OT_cancel, IMAGEN_OT_describe_scene,
           IMAGEN_OT_history_reuse)
