"""Pure scene logic of the Blender add-on: no bpy import, tested by plain pytest (tests/blender/test_logic.py).

Prompts composed from a scene description, node plans for worlds and materials, UV projection maths. scene.py
turns Blender data into the plain values these functions take and applies the plans they return.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

# --- scene description -> prompt -------------------------------------------------------------------------------

PALETTE = {
    "black": (0.05, 0.05, 0.05), "white": (0.95, 0.95, 0.95), "grey": (0.5, 0.5, 0.5),
    "dark grey": (0.25, 0.25, 0.25), "light grey": (0.75, 0.75, 0.75), "red": (0.8, 0.1, 0.1),
    "dark red": (0.45, 0.05, 0.05), "orange": (0.95, 0.55, 0.1), "yellow": (0.95, 0.9, 0.15),
    "green": (0.15, 0.65, 0.2), "dark green": (0.05, 0.3, 0.1), "cyan": (0.1, 0.8, 0.85),
    "blue": (0.1, 0.25, 0.85), "dark blue": (0.05, 0.08, 0.35), "light blue": (0.55, 0.75, 0.95),
    "purple": (0.5, 0.15, 0.7), "pink": (0.95, 0.5, 0.7), "brown": (0.45, 0.28, 0.12), "beige": (0.9, 0.82, 0.65),
}


def linear_to_srgb(value: float) -> float:
    value = max(0.0, min(1.0, value))
    return value * 12.92 if value <= 0.0031308 else 1.055 * value ** (1 / 2.4) - 0.055


def color_name(linear_rgb: Sequence[float]) -> str:
    """Nearest palette name of a scene-linear colour (Blender's colour properties are linear)."""
    rgb = [linear_to_srgb(c) for c in linear_rgb[:3]]
    return min(PALETTE, key=lambda name: sum((a - b) ** 2 for a, b in zip(rgb, PALETTE[name])))


@dataclass(frozen=True)
class SceneObject:
    name: str
    kind: str = "MESH"
    color: tuple[float, float, float] | None = None  # linear RGB of the (first) material


def object_noun(name: str) -> str:
    """'Cube.001' -> 'cube', 'OakTree_big' -> 'oak tree big'."""
    base = re.sub(r"\.\d+$", "", name)
    base = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base)
    words = re.sub(r"[_\-.\d]+", " ", base).lower().split()
    return " ".join(words) or "object"


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def compose_scene_prompt(objects: Iterable[SceneObject], world_color: Sequence[float] | None = None,
                         style: str = "3d render, soft lighting") -> str:
    """'a red cube, two blue spheres and a grey plane on a light blue background, 3d render, soft lighting'."""
    groups: dict[tuple[str, str], int] = {}
    for obj in objects:
        if obj.kind not in ("MESH", "CURVE", "SURFACE", "META", "FONT"):
            continue
        colour = color_name(obj.color) if obj.color is not None else ""
        key = (colour, object_noun(obj.name))
        groups[key] = groups.get(key, 0) + 1
    phrases = []
    for (colour, noun), count in groups.items():
        words = f"{colour} {noun}".strip() if count == 1 else f"{colour} {_plural(noun)}".strip()
        if count == 1:
            phrases.append(("an " if words[0] in "aeiou" else "a ") + words)
        else:
            phrases.append(f"{NUMBERS.get(count, str(count))} {words}")
    if not phrases:
        return ""
    text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    if world_color is not None:
        text += f" on a {color_name(world_color)} background"
    return f"{text}, {style}" if style else text


# --- node plans ------------------------------------------------------------------------------------------------


@dataclass
class NodeSpec:
    name: str  # node name, unique in the tree; an existing node with this name is reused
    type: str  # bpy node type id, e.g. "ShaderNodeTexImage"
    location: tuple[float, float]
    props: dict[str, Any] = field(default_factory=dict)  # node attributes (interpolation, uv_map, ...)
    inputs: dict[str, Any] = field(default_factory=dict)  # input socket default values
    image: bool = False  # this node gets the image


@dataclass
class NodePlan:
    nodes: list[NodeSpec]
    links: list[tuple[str, str, str, str]]  # (from node, output socket, to node, input socket)

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)


def world_node_plan(strength: float = 1.0) -> NodePlan:
    """Environment Texture (equirectangular; a 2:1 panorama wraps around) -> Background -> World Output."""
    return NodePlan(
        nodes=[
            NodeSpec("Imagen Environment", "ShaderNodeTexEnvironment", (-400, 300),
                     props={"projection": "EQUIRECTANGULAR", "interpolation": "Linear"}, image=True),
            NodeSpec("Imagen Background", "ShaderNodeBackground", (-100, 300), inputs={"Strength": strength}),
            NodeSpec("World Output", "ShaderNodeOutputWorld", (150, 300), props={"is_active_output": True}),
        ],
        links=[("Imagen Environment", "Color", "Imagen Background", "Color"),
               ("Imagen Background", "Background", "World Output", "Surface")],
    )


def material_node_plan(scale: float = 1.0, uv_map: str = "", extension: str = "REPEAT") -> NodePlan:
    """UV (optionally a named map) -> Mapping (scale) -> Image Texture -> Principled BSDF Base Color -> Output."""
    s = float(scale)
    coords = (NodeSpec("Imagen UV", "ShaderNodeUVMap", (-900, 300), props={"uv_map": uv_map}) if uv_map
              else NodeSpec("Imagen UV", "ShaderNodeTexCoord", (-900, 300)))
    return NodePlan(
        nodes=[
            coords,
            NodeSpec("Imagen Mapping", "ShaderNodeMapping", (-700, 300), inputs={"Scale": (s, s, 1.0)}),
            NodeSpec("Imagen Texture", "ShaderNodeTexImage", (-500, 300), props={"extension": extension},
                     image=True),
            NodeSpec("Principled BSDF", "ShaderNodeBsdfPrincipled", (-200, 300)),
            NodeSpec("Material Output", "ShaderNodeOutputMaterial", (100, 300), props={"is_active_output": True}),
        ],
        links=[("Imagen UV", "UV", "Imagen Mapping", "Vector"),
               ("Imagen Mapping", "Vector", "Imagen Texture", "Vector"),
               ("Imagen Texture", "Color", "Principled BSDF", "Base Color"),
               ("Principled BSDF", "BSDF", "Material Output", "Surface")],
    )


PBR_NORMAL_TEXTURE, PBR_NORMAL_MAP, PBR_ROUGHNESS_TEXTURE = (
    "Imagen Normal Texture", "Imagen Normal Map", "Imagen Roughness Texture")


def pbr_node_plan(extension: str = "REPEAT", uv_map: str = "") -> NodePlan:
    """Normal and roughness maps added to a material_node_plan material, sharing its Imagen Mapping (so they line up
    with the base colour): Image Texture -> Normal Map (tangent space of `uv_map`, "" = the active UV map) ->
    Principled BSDF Normal, and Image Texture -> Principled BSDF Roughness. The images (Non-Color) are set by the
    caller."""
    texture = {"extension": extension, "interpolation": "Linear"}
    return NodePlan(
        nodes=[
            NodeSpec(PBR_ROUGHNESS_TEXTURE, "ShaderNodeTexImage", (-500, -20), props=dict(texture)),
            NodeSpec(PBR_NORMAL_TEXTURE, "ShaderNodeTexImage", (-780, -340), props=dict(texture)),
            NodeSpec(PBR_NORMAL_MAP, "ShaderNodeNormalMap", (-480, -340), props={"space": "TANGENT", "uv_map": uv_map},
                     inputs={"Strength": 1.0}),
        ],
        links=[("Imagen Mapping", "Vector", PBR_ROUGHNESS_TEXTURE, "Vector"),
               ("Imagen Mapping", "Vector", PBR_NORMAL_TEXTURE, "Vector"),
               (PBR_ROUGHNESS_TEXTURE, "Color", "Principled BSDF", "Roughness"),
               (PBR_NORMAL_TEXTURE, "Color", PBR_NORMAL_MAP, "Color"),
               (PBR_NORMAL_MAP, "Normal", "Principled BSDF", "Normal")],
    )


def material_name(image_name: str, projected: bool = False) -> str:
    """'Imagen a brick wall' -> 'Imagen a brick wall' (materials and images have separate names) or, projected,
    'Imagen Projection a brick wall'."""
    base = image_name[len("Imagen "):] if image_name.startswith("Imagen ") else image_name
    return f"Imagen {'Projection ' if projected else ''}{base}"[:63]


def panorama_warning(width: int, height: int) -> str | None:
    if height and abs(width / height - 2.0) < 0.02:
        return None
    return f"The image is {width}x{height}, not a 2:1 panorama: the world will look stretched"


# --- UV maths -------------------------------------------------------------------------------------------------


def camera_uv(view: Sequence[float], frame_aspect: float = 1.0, image_aspect: float = 1.0) -> tuple[float, float]:
    """UV of a point from `world_to_camera_view` coordinates (x, y in 0..1 across the camera frame).

    The image covers the frame keeping its aspect (centre crop): when image and frame aspects match, UV = (x, y).
    """
    x, y = float(view[0]), float(view[1])
    if image_aspect > frame_aspect:  # image wider than the frame: its height spans the frame
        return 0.5 + (x - 0.5) * frame_aspect / image_aspect, y
    return x, 0.5 + (y - 0.5) * image_aspect / frame_aspect


def box_uv(co: Sequence[float], normal: Sequence[float], bbox_min: Sequence[float],
           bbox_max: Sequence[float]) -> tuple[float, float]:
    """Box projection for meshes without UVs: project along the dominant normal axis, normalized to the bbox."""
    axis = max(range(3), key=lambda i: abs(normal[i]))
    u_axis, v_axis = [(1, 2), (0, 2), (0, 1)][axis]
    extent = max(max(bbox_max[i] - bbox_min[i] for i in range(3)), 1e-9)
    return (co[u_axis] - bbox_min[u_axis]) / extent, (co[v_axis] - bbox_min[v_axis]) / extent
