"""Add-on preferences: how to reach the runtime (start one locally, or connect to URL + token), output folder."""

import os
import sys
import tempfile

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from .logic import RuntimeConfig, addon_package, runtime_python_paths

# `bl_ext.user_default.imagen` for an extension, `imagen` for a legacy add-on install: this module's package is
# `<that>.imagen_addon.blender`. Preferences are looked up by this name.
ADDON_PACKAGE = addon_package(__package__)


class ImagenPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    runtime_mode: EnumProperty(  # type: ignore[valid-type]
        name="Runtime",
        items=(
            ("LOCAL", "Local Runtime", "Start (or reuse) a runtime process on this computer"),
            ("REMOTE", "Connect to URL", "Use a runtime that is already running, e.g. `imagen serve` on a GPU box"),
        ),
        default="LOCAL",
    )
    python_path: StringProperty(  # type: ignore[valid-type]
        name="Python",
        description="Python interpreter that has torch installed and runs the model (default: Blender's own)",
        subtype="FILE_PATH",
        default=sys.executable,
    )
    model_dir: StringProperty(  # type: ignore[valid-type]
        name="Model Folder",
        description="Folder of a saved Imagen model; empty uses the model bundled with the add-on",
        subtype="DIR_PATH",
        default="",
    )
    auto_start: BoolProperty(  # type: ignore[valid-type]
        name="Start Automatically",
        description="Start the local runtime on the first generation when it is not running",
        default=True,
    )
    url: StringProperty(  # type: ignore[valid-type]
        name="URL",
        description="Base URL of a running runtime. Other computers need Blender's online access enabled",
        default="http://127.0.0.1:8765",
    )
    token: StringProperty(  # type: ignore[valid-type]
        name="Token",
        description="Access token printed by `imagen serve` (IMAGEN_RUNTIME_TOKEN)",
        subtype="PASSWORD",
        default="",
    )
    output_dir: StringProperty(  # type: ignore[valid-type]
        name="Output Folder",
        description="Where generated images are saved; empty uses the extension's user folder",
        subtype="DIR_PATH",
        default="",
    )
    timeout: FloatProperty(  # type: ignore[valid-type]
        name="Request Timeout",
        description="Seconds to wait for one answer of the runtime",
        default=30.0,
        min=1.0,
        max=600.0,
    )

    def draw(self, context):
        from . import runtime_ops

        layout = self.layout
        layout.prop(self, "runtime_mode", expand=True)
        box = layout.box()
        if self.runtime_mode == "LOCAL":
            box.prop(self, "python_path")
            box.prop(self, "model_dir")
            box.prop(self, "auto_start")
        else:
            box.prop(self, "url")
            box.prop(self, "token")
            if not bpy.app.online_access:
                box.label(text="Online access is off: only 127.0.0.1 / localhost URLs work", icon="INFO")
        row = box.row()
        row.label(text=runtime_ops.STATUS.text, icon="ERROR" if runtime_ops.STATUS.error else "INFO")
        row = box.row(align=True)
        if self.runtime_mode == "LOCAL":
            row.operator("imagen.runtime_start", icon="PLAY")
            row.operator("imagen.runtime_stop", icon="PAUSE")
        row.operator("imagen.runtime_check", icon="FILE_REFRESH")
        layout.prop(self, "output_dir")
        layout.prop(self, "timeout")


def get_prefs(context=None) -> ImagenPreferences | None:
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None else None


def user_dir(*parts: str) -> str:
    """A folder in the add-on's user folder (kept across Blender versions for extensions), created on demand."""
    try:
        base = bpy.utils.extension_path_user(ADDON_PACKAGE, create=True)
    except (ValueError, AttributeError):  # a legacy (non-extension) install, or Blender < 4.2
        base = bpy.utils.user_resource("DATAFILES", path="imagen", create=True) or os.path.join(
            tempfile.gettempdir(), "imagen")
    path = os.path.join(base, *parts)
    os.makedirs(path, exist_ok=True)
    return path


def output_dir(context=None) -> str:
    prefs = get_prefs(context)
    if prefs is not None and prefs.output_dir:
        path = bpy.path.abspath(prefs.output_dir)
        os.makedirs(path, exist_ok=True)
        return path
    return user_dir("images")


def runtime_config(context=None) -> RuntimeConfig:
    """Snapshot of the preferences for the worker thread (which must not read bpy data)."""
    prefs = get_prefs(context)
    if prefs is None:
        return RuntimeConfig(state_dir=user_dir("runtime"), python=sys.executable,
                             online_access=bool(bpy.app.online_access))
    python = bpy.path.abspath(prefs.python_path) if prefs.python_path else sys.executable
    return RuntimeConfig(
        mode=prefs.runtime_mode,
        url=prefs.url,
        token=prefs.token,
        python=python,
        model_dir=bpy.path.abspath(prefs.model_dir) if prefs.model_dir else "",
        auto_start=prefs.auto_start,
        state_dir=user_dir("runtime"),
        online_access=bool(bpy.app.online_access),
        timeout=prefs.timeout,
        extra_paths=runtime_python_paths(python, sys.executable, sys.path),
    )


classes = (ImagenPreferences,)
