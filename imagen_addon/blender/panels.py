"""3D View sidebar, "Imagen" tab: status, prompt, settings, buttons, progress + preview, image use, history."""

from __future__ import annotations

import bpy

from . import jobs, runtime_ops, scene as scene_data

HISTORY_ROWS = 10


class _ImagenPanel(bpy.types.Panel):
    """Shared settings of the Imagen panels (not registered itself)."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Imagen"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and hasattr(context.scene, "imagen")


class VIEW3D_PT_imagen(_ImagenPanel):
    bl_label = "Imagen"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.imagen
        state = jobs.STATE

        status = layout.row()
        if state.error:
            status.alert = True
            status.label(text=state.error, icon="ERROR")
        elif state.text:
            status.label(text=state.text, icon="INFO")
        else:
            status.label(text=runtime_ops.STATUS.text, icon="ERROR" if runtime_ops.STATUS.error else "INFO")

        col = layout.column(align=True)
        col.prop(settings, "prompt", text="", icon="TEXT")
        col.prop(settings, "negative_prompt", text="", icon="REMOVE")
        layout.operator("imagen.describe_scene", icon="SCENE_DATA")

        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("imagen.generate", icon="IMAGE_DATA")
        row.operator("imagen.generate_from_view", text="From View", icon="VIEW_CAMERA")

        if jobs.busy():
            row = layout.row(align=True)
            row.progress(factor=state.progress, type="BAR", text=state.text or "Working")
            row.operator("imagen.cancel", text="", icon="CANCEL")
            preview = bpy.data.images.get(state.preview_name) if state.preview_name else None
            if preview is not None and preview.preview is not None:
                layout.template_icon(icon_value=preview.preview.icon_id, scale=8.0)


class VIEW3D_PT_imagen_settings(_ImagenPanel):
    bl_label = "Settings"
    bl_parent_id = "VIEW3D_PT_imagen"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.imagen
        row = layout.row(align=True)
        sub = row.row(align=True)
        sub.enabled = not settings.random_seed
        sub.prop(settings, "seed")
        row.prop(settings, "random_seed", text="", icon="FILE_REFRESH")
        layout.prop(settings, "steps")
        layout.prop(settings, "sampler")
        layout.prop(settings, "guidance_scale")
        layout.prop(settings, "use_native_size")
        col = layout.column(align=True)
        col.enabled = not settings.use_native_size
        if not settings.panorama:
            col.prop(settings, "width")
        col.prop(settings, "height")
        layout.prop(settings, "panorama")
        row = layout.row()
        row.enabled = not settings.panorama
        row.prop(settings, "tiling")
        layout.prop(settings, "strength")


class VIEW3D_PT_imagen_use(_ImagenPanel):
    bl_label = "Use Image"
    bl_parent_id = "VIEW3D_PT_imagen"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.imagen
        layout.template_ID(settings, "image", open="image.open")
        row = layout.row(align=True)
        row.operator("imagen.upscale", icon="FULLSCREEN_ENTER")
        row.operator("imagen.pbr_maps", icon="NODE_MATERIAL")
        col = layout.column(align=True)
        col.operator("imagen.set_world", icon="WORLD")
        col.operator("imagen.apply_material", icon="MATERIAL")
        col.prop(settings, "texture_scale")
        col.operator("imagen.project_from_camera", icon="CAMERA_DATA")


class VIEW3D_PT_imagen_history(_ImagenPanel):
    bl_label = "History"
    bl_parent_id = "VIEW3D_PT_imagen"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        items = scene_data.history_images()
        if not items:
            layout.label(text="No generated images in this file yet")
            return
        for image, record in items[:HISTORY_ROWS]:
            box = layout.box()
            row = box.row()
            row.label(text=record["prompt"] or image.name, icon="IMAGE_DATA")
            op = row.operator("imagen.history_reuse", text="", icon="RECOVER_LAST")
            op.image_name = image.name
            box.label(text=f"seed {record.get('seed')}  {record.get('created', '')}")
        if len(items) > HISTORY_ROWS:
            layout.label(text=f"... and {len(items) - HISTORY_ROWS} older images")


classes = (VIEW3D_PT_imagen, VIEW3D_PT_imagen_settings, VIEW3D_PT_imagen_use, VIEW3D_PT_imagen_history)
