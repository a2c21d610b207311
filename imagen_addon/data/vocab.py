"""Procedural Worlds v1 vocabulary: palette, attribute values, sampling and captions.

Everything here is copied from the contract in `shared/procedural-worlds.md`; keep it in step with that file.
The evaluation reuses this module to enumerate attribute combinations and to hold some of them out, so the
functions are pure and driven by an explicit `numpy.random.Generator`.

Attribute records (JSON-ready dicts, exact key order):
    {"kind": "landscape", "sky": "sunset", "ground": "water", "sun": True, "moon": False, "mountains": False,
     "clouds": False, "object": {"shape": "ball", "color": "red", "position": "left"}}   # object may be None
    {"kind": "material", "pattern": "stripes", "colors": ["blue", "white"], "orientation": "diagonal"}
For materials `colors` is [A, B] for two-colour patterns. One colour means the pattern's default second colour
(bricks: light gray mortar) or, for wood / marble / stone, the grain / vein / stone colour A.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np

RGB = tuple[int, int, int]

PALETTE: dict[str, RGB] = {
    "red": (200, 40, 40), "orange": (235, 130, 30), "yellow": (235, 205, 45), "green": (55, 150, 60),
    "blue": (45, 85, 200), "purple": (125, 55, 170), "pink": (235, 130, 175), "white": (235, 235, 235),
    "gray": (128, 128, 128), "black": (25, 25, 25), "brown": (115, 72, 40),
}
COLORS: tuple[str, ...] = tuple(PALETTE)

SKIES = ("day", "sunset", "night", "overcast")
SKY_GRADIENTS: dict[str, tuple[RGB, RGB]] = {  # (top, horizon)
    "day": ((70, 130, 215), (175, 210, 240)),
    "sunset": ((75, 55, 130), (245, 150, 60)),
    "night": ((10, 14, 40), (25, 35, 75)),
    "overcast": ((120, 125, 132), (170, 172, 176)),
}
GROUNDS = ("grass", "sand", "snow", "water", "lava")
GROUND_COLORS: dict[str, RGB] = {
    "grass": (60, 140, 55), "sand": (215, 185, 120), "snow": (236, 240, 245), "water": (35, 85, 150),
    "lava": (190, 50, 15),
}
LAVA_CRACK: RGB = (250, 140, 30)
SUN_COLORS: dict[str, RGB] = {"day": (255, 240, 180), "sunset": (255, 200, 90)}
MOON_COLOR: RGB = (230, 230, 210)
MOUNTAIN_COLORS: dict[str, RGB] = {
    "day": (95, 105, 125), "sunset": (85, 55, 95), "night": (15, 18, 35), "overcast": (100, 102, 108),
}
SHAPES = ("ball", "cube", "tree")
POSITIONS = ("left", "center", "right")
PATTERNS = ("bricks", "checkerboard", "stripes", "dots", "tiles", "wood", "marble", "stone")
ORIENTATIONS = ("horizontal", "vertical", "diagonal")
TWO_COLOR_PATTERNS = ("checkerboard", "stripes", "dots")
DEFAULT_MORTAR: RGB = (200, 200, 200)
DEFAULT_COLOR = {"bricks": None, "tiles": "white", "wood": "brown", "marble": "gray", "stone": "gray"}

# Allowed phrasings, exactly the spec's table. Sky and ground phrasings carry the glue they need.
SKY_PHRASES = {
    "day": ("under a clear sky", "under a blue sky", "in the daytime", "on a sunny day"),
    "sunset": ("at sunset", "under a sunset sky", "in the evening"),
    "night": ("at night", "under a night sky", "under the stars"),
    "overcast": ("under an overcast sky", "under a cloudy sky", "under a gray sky"),
}
GROUND_PHRASES = {  # (noun phrase, preposition for "an object ... <prep> <ground>")
    "grass": (("grass", "on"), ("green grass", "on"), ("a meadow", "in")),
    "sand": (("sand", "on"), ("a desert", "in"), ("sandy ground", "on")),
    "snow": (("snow", "in"), ("snowy ground", "on"), ("a snowfield", "on")),
    "water": (("water", "on"), ("the ocean", "on"), ("the sea", "on"), ("a lake", "on")),
    "lava": (("lava", "on"), ("molten lava", "on")),
}
EXTRA_PHRASES = {
    "sun": ("the sun", "a bright sun"), "moon": ("the moon", "a full moon"),
    "mountains": ("mountains", "hills"), "clouds": ("clouds",),
}
SHAPE_WORDS = {"ball": ("ball", "sphere"), "cube": ("cube", "box"), "tree": ("tree",)}
POSITION_PHRASES = {"left": "on the left", "center": "in the center", "right": "on the right"}
PATTERN_WORDS = {  # pattern -> (plural or mass nouns, singular nouns that take an article)
    "bricks": (("bricks",), ("brick wall",)),
    "checkerboard": ((), ("checkerboard", "checkered pattern")),
    "stripes": (("stripes",), ("striped pattern",)),
    "dots": (("polka dots", "dots"), ()),
    "tiles": (("tiles",), ("tiled floor",)),
    "wood": (("wood", "wooden planks"), ()),
    "marble": (("marble",), ()),
    "stone": (("stone", "rock"), ()),
}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _other_color(rng: np.random.Generator, *avoid: str) -> str:
    return _pick(rng, [c for c in COLORS if c not in avoid])


def _sample_landscape(rng: np.random.Generator) -> dict:
    sky, ground = _pick(rng, SKIES), _pick(rng, GROUNDS)
    sun = sky in ("day", "sunset") and bool(rng.random() < 0.5)
    moon = sky == "night" and bool(rng.random() < 0.5)
    mountains = bool(rng.random() < 0.45)
    clouds = sky != "night" and bool(rng.random() < (0.6 if sky == "overcast" else 0.35))
    obj = None
    if rng.random() < 0.7:
        obj = {"shape": _pick(rng, SHAPES), "color": _pick(rng, COLORS), "position": _pick(rng, POSITIONS)}
    return {"kind": "landscape", "sky": sky, "ground": ground, "sun": sun, "moon": moon,
            "mountains": mountains, "clouds": clouds, "object": obj}


def _sample_material(rng: np.random.Generator) -> dict:
    pattern = _pick(rng, PATTERNS)
    a = _pick(rng, COLORS)
    if pattern in TWO_COLOR_PATTERNS:
        colors = [a, _other_color(rng, a)]
    elif pattern == "bricks":
        colors = [a] if rng.random() < 0.5 else [a, _other_color(rng, a)]
    elif pattern == "tiles":
        b = "white" if a != "white" and rng.random() < 0.5 else _other_color(rng, a)
        colors = [a, b]
    else:  # wood, marble, stone: one colour, often the default; marble veins are never white on white
        default = DEFAULT_COLOR[pattern]
        avoid = ("white",) if pattern == "marble" else ()
        colors = [default if rng.random() < 0.5 else _other_color(rng, *avoid)]
    attrs = {"kind": "material", "pattern": pattern, "colors": colors}
    if pattern == "stripes":
        attrs["orientation"] = _pick(rng, ORIENTATIONS)
    return attrs


def sample_attributes(rng: np.random.Generator, kind: str | None = None,
                      exclude: Callable[[dict], bool] | None = None, material_fraction: float = 0.4) -> dict:
    """Draw one attribute record; `kind` None picks material with `material_fraction`, else landscape.

    `exclude(attrs) -> True` rejects a record (held-out combinations); we redraw up to 10,000 times.
    """
    if kind is None:
        kind = "material" if rng.random() < material_fraction else "landscape"
    if kind not in ("landscape", "material"):
        raise ValueError(f"kind must be 'landscape' or 'material', not {kind!r}")
    draw = _sample_landscape if kind == "landscape" else _sample_material
    for _ in range(10_000):
        attrs = draw(rng)
        if exclude is None or not exclude(attrs):
            return attrs
    raise ValueError(f"exclude() rejected 10,000 {kind} samples in a row; is every combination held out?")


def iter_combinations(kind: str) -> Iterator[dict]:
    """Every attribute record the sampler can produce for `kind` (landscapes: 12,000; materials: 813)."""
    if kind == "landscape":
        objects = [None] + [{"shape": s, "color": c, "position": p}
                            for s, c, p in itertools.product(SHAPES, COLORS, POSITIONS)]
        for sky, ground in itertools.product(SKIES, GROUNDS):
            suns = (False, True) if sky in ("day", "sunset") else (False,)
            moons = (False, True) if sky == "night" else (False,)
            clouds = (False,) if sky == "night" else (False, True)
            for sun, moon, mnt, cld, obj in itertools.product(suns, moons, (False, True), clouds, objects):
                yield {"kind": "landscape", "sky": sky, "ground": ground, "sun": sun, "moon": moon,
                       "mountains": mnt, "clouds": cld, "object": None if obj is None else dict(obj)}
    elif kind == "material":
        pairs = [[a, b] for a, b in itertools.permutations(COLORS, 2)]
        for pattern in PATTERNS:
            if pattern == "stripes":
                for colors, orient in itertools.product(pairs, ORIENTATIONS):
                    yield {"kind": "material", "pattern": pattern, "colors": colors, "orientation": orient}
                continue
            if pattern in ("wood", "stone"):
                options = [[c] for c in COLORS]
            elif pattern == "marble":
                options = [[c] for c in COLORS if c != "white"]
            elif pattern == "bricks":
                options = [[c] for c in COLORS] + pairs
            else:
                options = pairs
            for colors in options:
                yield {"kind": "material", "pattern": pattern, "colors": list(colors)}
    else:
        raise ValueError(f"kind must be 'landscape' or 'material', not {kind!r}")


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _landscape_caption(attrs: dict, rng: np.random.Generator) -> str:
    sky = _pick(rng, SKY_PHRASES[attrs["sky"]])
    ground, prep = _pick(rng, GROUND_PHRASES[attrs["ground"]])
    extras = [_pick(rng, EXTRA_PHRASES[k]) for k in ("sun", "moon", "mountains", "clouds") if attrs.get(k)]
    extras = [extras[i] for i in rng.permutation(len(extras))]
    obj = attrs.get("object")
    thing = None
    if obj:
        shape = _pick(rng, SHAPE_WORDS[obj["shape"]])
        thing = f"{_a(obj['color'] + ' ' + shape)} {POSITION_PHRASES[obj['position']]}"
    with_extras = f" with {_join(extras)}" if extras else ""
    template = int(rng.integers(3))
    if thing and template == 0:
        return f"a landscape with {thing} {prep} {ground} {sky}{with_extras}"
    if thing and template == 1:
        return f"{thing} {prep} {ground} {sky}{with_extras}"
    items = extras + ([thing] if thing else [])
    if template == 2 or not items:
        return f"a landscape with {_join([ground] + items)} {sky}"
    return f"{ground} {sky} with {_join(items)}"


def _material_phrase(attrs: dict, rng: np.random.Generator) -> str:
    pattern, colors = attrs["pattern"], list(attrs["colors"])
    plural, singular = PATTERN_WORDS[pattern]
    if pattern == "dots":
        dots = _pick(rng, plural)
        if rng.random() < 0.5:
            return f"{colors[0]} {dots} on {colors[1]}"
        return f"{colors[1]} with {colors[0]} {dots}"
    default = DEFAULT_COLOR.get(pattern)
    if pattern == "marble":  # white base with veins of A: "white and green marble"; gray veins may go unsaid
        colors = ["white", colors[0]] if colors[0] != default or rng.random() < 0.4 else _pick(rng, ([], ["white"]))
    elif colors[-1] == default and rng.random() < 0.4:
        colors = colors[:-1]  # "blue tiles" (default white grout), plain "wood" / "stone"
    words = " and ".join(colors)
    if pattern == "stripes":
        orient = attrs["orientation"]
        words = f"{words} {orient}" if rng.random() < 0.5 else f"{orient} {words}"
    if singular and (not plural or rng.random() < 0.5):
        return _a(f"{words} {_pick(rng, singular)}".strip())
    return f"{words} {_pick(rng, plural)}".strip()


def caption(attrs: dict, rng: np.random.Generator) -> str:
    """A caption for `attrs` using only the spec's vocabulary and glue words, with varied templates."""
    if attrs["kind"] == "landscape":
        return _landscape_caption(attrs, rng)
    phrase = _material_phrase(attrs, rng)
    template = int(rng.integers(3))
    if template == 0:
        return f"a seamless texture of {phrase}"
    return phrase if template == 1 else f"{phrase}, a seamless texture"
