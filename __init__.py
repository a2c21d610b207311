"""Imagen for Blender: extension entry point.

Blender imports this file as `bl_ext.<repo>.imagen` (or `imagen` for a legacy add-on install). Everything lives in
`imagen_addon/blender/`; this module only forwards register()/unregister(), imported lazily so that this file stays
importable outside Blender. Relative imports only: the package name depends on where Blender installed us.
"""


def register():
    from .imagen_addon import blender

    blender.register()


def unregister():
    from .imagen_addon import blender

    blender.unregister()
