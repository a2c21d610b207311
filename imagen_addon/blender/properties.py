"""Per-scene generation settings (`scene.imagen`), saved with the .blend file."""

from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .logic import MAX_SEED, SAMPLERS, TILING

# Names of the settings that logic.build_request reads (and history restores).
SETTING_NAMES = ("prompt", "negative_prompt", "seed", "random_seed", "steps", "sampler", "guidance_scale",
                 "use_native_size", "width", "height", "tiling", "panorama", "strength")


class ImagenSettings(bpy.types.PropertyGroup):
    prompt: StringProperty(  # type: ignore[valid-type]
        name="Prompt", description="What to generate, e.g. 'weathered red brick wall, photo'", default="")
    negative_prompt: StringProperty(  # type: ignore[valid-type]
        name="Negative", description="What to avoid, e.g. 'blurry, text, watermark'", default="")
    seed: IntProperty(  # type: ignore[valid-type]
        name="Seed", description="Same seed and settings give the same image", default=0, min=0, max=MAX_SEED)
    random_seed: BoolProperty(  # type: ignore[valid-type]
        name="Random Seed", description="Draw a new seed for every generation", default=True)
    steps: IntProperty(  # type: ignore[valid-type]
        name="Steps", description="Sampler steps: more is slower and usually cleaner", default=20, min=1, max=250)
    sampler: EnumProperty(  # type: ignore[valid-type]
        name="Sampler", items=SAMPLERS, default="dpmpp")
    guidance_scale: FloatProperty(  # type: ignore[valid-type]
        name="Guidance", description="How closely to follow the prompt (classifier-free guidance scale)",
        default=5.0, min=0.0, max=30.0)
    use_native_size: BoolProperty(  # type: ignore[valid-type]
        name="Model Size", description="Generate at the model's native resolution", default=True)
    width: IntProperty(  # type: ignore[valid-type]
        name="Width", default=256, min=8, max=1024, step=8, subtype="PIXEL")
    height: IntProperty(  # type: ignore[valid-type]
        name="Height", default=256, min=8, max=1024, step=8, subtype="PIXEL")
    tiling: EnumProperty(  # type: ignore[valid-type]
        name="Tiling", description="Make the image seamless when repeated", items=TILING, default="none")
    panorama: BoolProperty(  # type: ignore[valid-type]
        name="Panorama", description="2:1 equirectangular image that wraps around (for world backgrounds)",
        default=False)
    strength: FloatProperty(  # type: ignore[valid-type]
        name="Strength", description="Generate from View: how much of the viewport image is replaced",
        default=0.7, min=0.0, max=1.0, subtype="FACTOR")
    texture_scale: FloatProperty(  # type: ignore[valid-type]
        name="Texture Scale", description="Repeats of the image per UV unit when applied as a material",
        default=1.0, min=0.01, max=100.0)
    image: PointerProperty(  # type: ignore[valid-type]
        name="Image", description="Image used by Set as World / Apply to Selected / Project from Camera",
        type=bpy.types.Image)


def settings_dict(settings: ImagenSettings) -> dict[str, Any]:
    """Plain values for logic.build_request (read on the main thread)."""
    return {name: getattr(settings, name) for name in SETTING_NAMES}


def apply_settings(settings: ImagenSettings, values: dict[str, Any]) -> None:
    for name, value in values.items():
        if name in SETTING_NAMES:
            setattr(settings, name, value)


classes = (ImagenSettings,)


def register_props() -> None:
    bpy.types.Scene.imagen = PointerProperty(type=ImagenSettings)  # type: ignore[attr-defined]


def unregister_props() -> None:
    del bpy.types.Scene.imagen  # type: ignore[attr-defined]
