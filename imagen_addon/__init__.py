"""Imagen for Blender: an offline, trainable Imagen (Saharia et al. 2022).

`import imagen_addon` stays light (no torch, no transformers): the Blender side imports this package too.
`from imagen_addon import Imagen` loads the torch model code on first access.
"""

__version__ = "0.1.0"
__all__ = ["Imagen", "ImagenConfig", "__version__"]


def __getattr__(name):
    if name in ("Imagen", "ImagenConfig"):
        from .core import imagen

        return getattr(imagen, name)
    raise AttributeError(f"module 'imagen_addon' has no attribute {name!r}")
