"""Blender glue of Imagen: properties, preferences, operators and panels, registered in that order.

Importing this package does not import bpy (so `imagen_addon.blender.logic` is usable without Blender); the
modules that need bpy are imported by register()/unregister().
"""

from __future__ import annotations

import atexit


def _modules():
    from . import apply_ops, image_ops, operators, panels, preferences, properties, runtime_ops

    return properties, preferences, operators, apply_ops, image_ops, runtime_ops, panels


def register() -> None:
    import bpy

    from .properties import register_props

    for module in _modules():
        for cls in module.classes:
            bpy.utils.register_class(cls)
    register_props()
    atexit.register(_stop_runtime)


def unregister() -> None:
    import bpy

    from . import jobs, runtime_ops
    from .properties import unregister_props

    jobs.shutdown()
    runtime_ops.shutdown()
    _stop_runtime()
    atexit.unregister(_stop_runtime)
    unregister_props()
    for module in reversed(_modules()):
        for cls in reversed(module.classes):
            bpy.utils.unregister_class(cls)


def _stop_runtime() -> None:
    """Stop the runtime this Blender started (never one it merely reused)."""
    from .worker import stop_all_launchers

    stop_all_launchers()
