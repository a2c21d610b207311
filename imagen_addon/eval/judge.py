"""Attribute judge for Procedural Worlds v1 images: does an image show what its attribute record asks for?

Colours, positions and presence are measured directly with the spec's known geometry and colours
(`shared/procedural-worlds.md`); pattern, stripe orientation and object shape come from small CNNs trained on
procedural images (`classifier.py`). Everything runs at a judging scale of 64 px (after area downsampling),
uses medians and votes over regions, and classifies into the nearest spec value, so blurry or noisy generated
images are judged by the same rules as clean procedural ones.

    judge(image, attrs, nets) -> {"sky": True, "ground": True, "object_color": False, ...}  # asked attributes
    judge_batch(images, records, nets) -> (verdicts, world-net features for the Fréchet distance)
    describe_landscape(img) / material_colors(img, pattern) -> what the judge sees
    seam_ratio(image or images, axis) -> mean |last - first| / mean |interior neighbours| (~1: no seam)
Objects the spec paints in their ground's colour (`object_visible`) cannot be judged and are not asked for.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..data.vocab import (GROUND_COLORS, MOON_COLOR, MOUNTAIN_COLORS, PALETTE, POSITIONS, SKY_GRADIENTS,
                          SUN_COLORS)

SCALE = 64  # judging height in pixels
SEAM_LIMIT = 1.5  # a tiled image is judged seamless when both seam ratios are at most this
SHADE = (0.8, 1.2)  # ground texture brightness range around a row's median
CAMOUFLAGE = 56.0  # an object colour closer than this to its (night-shaded) ground colour is invisible
NAMES = tuple(PALETTE)
PALETTE_RGB = np.asarray(list(PALETTE.values()), np.float32)
CLOUD_RGB = np.asarray([(246, 246, 248), (196, 199, 206)], np.float32)
LANDSCAPE_ATTRIBUTES = ("sky", "ground", "sun", "moon", "object_color", "object_position", "object_shape")
MATERIAL_ATTRIBUTES = ("colors", "pattern", "orientation", "seamless")


def to_array(image, height: int | None = SCALE) -> np.ndarray:
    """PIL image or uint8/float array [H, W, 3] -> float32 [height, W * height / H, 3] in 0..255 (area resample)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.clip(image + 0.5 if image.dtype != np.uint8 else image, 0, 255).astype(np.uint8))
    image = image.convert("RGB")
    if height is not None and image.height != height:
        width = max(1, round(image.width * height / image.height))
        image = image.resize((width, height), Image.BOX)
    return np.asarray(image, np.float32)


# ---------------------------------------------------------------- colour geometry


def segment_distance(pixels: np.ndarray, a, b) -> np.ndarray:
    """Distance of every pixel [..., 3] to the RGB segment a-b (end points (3,) or broadcasting per pixel)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    ab = b - a
    t = np.clip(((pixels - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-6), 0, 1)
    return np.linalg.norm(pixels - (a + t[..., None] * ab), axis=-1)


def ray_distance(pixels: np.ndarray, colour, lo: float, hi: float) -> np.ndarray:
    """Distance of every pixel to the colours f * colour, f in [lo, hi] (a colour under any shading)."""
    c = np.asarray(colour, np.float32)
    return segment_distance(pixels, lo * c, hi * c)


def nearest_palette(rgb, names: tuple[str, ...] = NAMES) -> str:
    """The palette name nearest to one colour."""
    d = np.linalg.norm(PALETTE_RGB[[NAMES.index(n) for n in names]] - np.asarray(rgb, np.float32), axis=-1)
    return names[int(d.argmin())]


def _vote(scores: dict[str, np.ndarray]) -> str:
    """The key whose distance map is smallest at the most pixels."""
    keys = list(scores)
    winners = np.stack([scores[k].ravel() for k in keys]).argmin(axis=0)
    return keys[int(np.bincount(winners, minlength=len(keys)).argmax())]


def erode(mask: np.ndarray) -> np.ndarray:
    """3x3 binary erosion (the border counts as background)."""
    padded = np.pad(mask, 1, constant_values=False)
    out = np.ones_like(mask)
    h, w = mask.shape
    for dy in range(3):
        for dx in range(3):
            out &= padded[dy:dy + h, dx:dx + w]
    return out


def dilate(mask: np.ndarray) -> np.ndarray:
    return ~erode(~mask)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, largest first, as arrays of flat indices."""
    h, w = mask.shape
    flat = mask.ravel()
    seen = np.zeros(h * w, bool)
    found = []
    for start in np.flatnonzero(flat):
        if seen[start]:
            continue
        seen[start] = True
        stack, members = [int(start)], []
        while stack:
            i = stack.pop()
            members.append(i)
            y, x = divmod(i, w)
            for j, ok in ((i - w, y > 0), (i + w, y < h - 1), (i - 1, x > 0), (i + 1, x < w - 1)):
                if ok and flat[j] and not seen[j]:
                    seen[j] = True
                    stack.append(j)
        found.append(np.asarray(members))
    return sorted(found, key=len, reverse=True)


# ---------------------------------------------------------------- landscapes


def classify_sky(img: np.ndarray) -> str:
    """Nearest spec sky over the top quarter (above any mountain or object), clouds left out of the vote."""
    band = img[: max(2, int(0.25 * img.shape[0]))].reshape(-1, 3)
    cloudy = (band.max(-1) - band.min(-1) < 22) & (band.mean(-1) > 182)
    if (~cloudy).mean() > 0.2:
        band = band[~cloudy]
    scores = {}
    for sky, (top, bottom) in SKY_GRADIENTS.items():  # the top of the gradient, to 65 % of the way down
        top = np.asarray(top, np.float32)
        scores[sky] = segment_distance(band, top, top + 0.65 * (np.asarray(bottom, np.float32) - top))
    return _vote(scores)


def classify_ground(img: np.ndarray) -> str:
    """Nearest spec ground colour, at any brightness from night shade to lit, over the bottom third."""
    band = img[int(np.ceil(0.67 * img.shape[0])):].reshape(-1, 3)
    return _vote({g: ray_distance(band, c, 0.3, 1.25) for g, c in GROUND_COLORS.items()})


def find_horizon(img: np.ndarray, sky: str, ground: str) -> int:
    """First ground row. Every pixel is labelled ground, mountain or sky by its nearest spec colour model; the
    horizon is the step of the best step-function fit to the per-row ground fraction, between 45 % and 65 %."""
    h = img.shape[0]
    lit = (0.3, 0.6) if sky == "night" else (0.78, 1.2)
    top, bottom = SKY_GRADIENTS[sky]
    d_ground = ray_distance(img, GROUND_COLORS[ground], *lit)
    d_other = np.minimum(ray_distance(img, MOUNTAIN_COLORS[sky], 0.85, 1.15), segment_distance(img, top, bottom))
    frac = (d_ground < d_other).mean(axis=1)
    lo, hi = int(0.3 * h), int(np.ceil(0.8 * h))
    cands = range(int(0.45 * h) - 1, int(np.ceil(0.65 * h)) + 2)
    fit = [frac[r:hi].mean() - frac[lo:r].mean() for r in cands]
    return cands[int(np.argmax(fit))]


def _sky_colour(sky: str, rows: int, horizon: int) -> np.ndarray:
    """The spec gradient colour of every row above the horizon, [rows, 1, 3]."""
    top, bottom = (np.asarray(c, np.float32) for c in SKY_GRADIENTS[sky])
    t = np.clip((np.arange(rows, dtype=np.float32) + 0.5) / max(horizon, 1), 0, 1)[:, None, None]
    return top + (bottom - top) * t


def foreground(img: np.ndarray, sky: str, ground: str, horizon: int, tolerance: float = 30.0) -> np.ndarray:
    """Pixels no scene model explains: not sky (gradient, clouds, sun, moon, stars), not mountain, not ground
    (the row's median colour at any shade from shadow to highlight). Thin lava cracks and water streaks are
    left to the erosion in `find_object`."""
    h, w, _ = img.shape
    best = np.full((h, w), np.inf, np.float32)
    sky_px, sky_rgb = img[:horizon], _sky_colour(sky, horizon, horizon)
    models = [segment_distance(sky_px, SKY_GRADIENTS[sky][0], SKY_GRADIENTS[sky][1]),
              ray_distance(sky_px, MOUNTAIN_COLORS[sky], 0.8, 1.2)]
    lights = [SUN_COLORS.get(sky, MOON_COLOR), MOON_COLOR, (255, 255, 255)] if sky == "night" else \
        [SUN_COLORS.get(sky, (255, 255, 255)), *CLOUD_RGB]
    # blends of the sky with a light: glow, soft disk edges, clouds, stars
    models += [segment_distance(sky_px, sky_rgb, np.asarray(light, np.float32)) for light in lights]
    best[:horizon] = np.min(models, axis=0)
    med = np.median(img[horizon:], axis=1, keepdims=True)  # [rows, 1, 3]
    best[horizon:] = segment_distance(img[horizon:], SHADE[0] * med, SHADE[1] * med)
    return best > tolerance


def find_object(img: np.ndarray, sky: str, ground: str, horizon: int, min_pixels: int = 10):
    """(core, mask) of the object, or None: `core` is the largest component of the eroded foreground whose
    regrown `mask` (the foreground pixels around it) reaches below the horizon."""
    fg = foreground(img, sky, ground, horizon)
    for comp in components(erode(fg)):
        if len(comp) < min_pixels:
            break
        core = np.zeros(fg.shape, bool)
        core.ravel()[comp] = True
        mask = dilate(dilate(core)) & fg
        if mask[horizon:].any():
            return core, mask
    return None


def find_disk(img: np.ndarray, colour, horizon: int, shade: tuple[float, float] = (1.0, 1.0),
              tolerance: float = 45.0, min_core: int = 4) -> bool:
    """Whether a disk of `colour` (at a brightness in `shade`) shows above the horizon: enough pixels near the
    colour survive a 3x3 erosion (stars, sparkles and thin glows do not)."""
    near = ray_distance(img[:horizon], colour, *shade) < tolerance
    return int(erode(near).sum()) >= min_core


def object_visible(attrs: dict) -> bool:
    """False where the spec makes the object the colour of its ground (e.g. a white cube on snow, a red ball on
    lava): even the procedural renderer cannot show those, so the evaluation leaves them out."""
    obj = attrs.get("object")
    if not obj:
        return True
    ground = np.asarray(GROUND_COLORS[attrs["ground"]], np.float32) * (0.5 if attrs["sky"] == "night" else 1.0)
    return float(np.linalg.norm(np.asarray(PALETTE[obj["color"]], np.float32) - ground)) >= CAMOUFLAGE


# ---------------------------------------------------------------- materials


def two_means(pixels: np.ndarray, iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """2-means with median updates, started from the pixel farthest from the median and the pixel farthest from
    that one; returns (medians [2, 3], area fractions [2]), the larger cluster first."""
    a = pixels[np.linalg.norm(pixels - np.median(pixels, axis=0), axis=-1).argmax()]
    b = pixels[np.linalg.norm(pixels - a, axis=-1).argmax()]
    centres = np.stack([a, b])
    for _ in range(iterations):
        labels = np.linalg.norm(pixels[:, None] - centres[None], axis=-1).argmin(axis=1)
        if labels.min() == labels.max():
            break
        centres = np.stack([np.median(pixels[labels == k], axis=0) for k in (0, 1)])
    fractions = np.array([(labels == 0).mean(), (labels == 1).mean()])
    order = np.argsort(-fractions, kind="stable")
    return centres[order], fractions[order]


def ray_palette(rgb, lo: float, hi: float, names: tuple[str, ...] = NAMES) -> str:
    """The palette colour whose shades f * colour (f in [lo, hi]) come nearest to `rgb`."""
    rgb = np.asarray(rgb, np.float32)[None]
    return names[int(np.argmin([ray_distance(rgb, PALETTE[n], lo, hi)[0] for n in names]))]


def material_colors(img: np.ndarray, pattern: str) -> dict:
    """What the judge reads as the material's colours: {"a": name, "b": name or None} where `a` is the pattern
    colour (bricks, tiles, dots, stripes, checks; wood grain, marble veins, stone) and `b` the second colour."""
    pixels = img.reshape(-1, 3)
    if pattern in ("wood", "stone"):
        return {"a": ray_palette(np.median(pixels, axis=0), 0.75, 1.1), "b": None}
    if pattern == "marble":  # white base; the veins are the pixels farthest from it, blends of A over white
        base = np.median(pixels, axis=0)
        far = pixels[np.argsort(-np.linalg.norm(pixels - base, axis=-1))[: max(1, len(pixels) // 25)]]
        white = np.asarray(PALETTE["white"], np.float32)
        d = [np.median(segment_distance(far, white + 0.7 * (np.asarray(PALETTE[n], np.float32) - white),
                                        PALETTE[n])) for n in NAMES if n != "white"]
        return {"a": [n for n in NAMES if n != "white"][int(np.argmin(d))], "b": "white"}
    (major, minor), _ = two_means(pixels)
    major, minor = nearest_palette(major), nearest_palette(minor)
    if pattern == "dots":  # dots of A cover 20-40 % of the tile
        return {"a": minor, "b": major}
    return {"a": major, "b": minor}


def colors_match(seen: dict, attrs: dict) -> bool:
    """Whether the colours read by `material_colors` are the record's: both colours in their roles (either way
    round for checkerboard and stripes, whose two colours share the area), or just A for one-colour records."""
    colors = list(attrs["colors"])
    if len(colors) == 1:
        return seen["a"] == colors[0]
    if attrs["pattern"] in ("checkerboard", "stripes"):
        return {seen["a"], seen["b"]} == set(colors)
    return [seen["a"], seen["b"]] == colors


def seam_ratio(images, axis: int = 1, period: int = 1) -> float:
    """Seam error of an image that should wrap along `axis` (1: left-right, 0: top-bottom): the mean absolute
    difference between the last and first column (row) over the mean difference between interior neighbours,
    at full resolution; for a list of images, pooled (sums of both over the images). About 1 or below when the
    wrap is invisible, well above 1.5 for a visible seam. `period` > 1 compares the seam only with the interior
    neighbours at the same phase of a `period`-pixel grid (pairs (i, i + 1) with i + 1 a multiple of it, as the
    wrap pair (n - 1, 0) is). With circular padding a cascade commutes with rolls by its `size_multiple` (every
    stage's U-Net with rolls on its block grid), so the wrap pair is drawn exactly like those interior pairs: the
    same-phase ratio pooled over many images tends to 1 whatever the model learned. The plain ratio also counts
    where the model puts pattern edges relative to that grid: a checkerboard whose cell edges fall on the grid
    lands them on the wrap as often as on any same-phase interior pair, and the wrap then looks like a seam.
    """
    seam = interior = 0.0
    for image in images if isinstance(images, list) else [images]:
        a = np.moveaxis(to_array(image, None), axis, 0)
        seam += float(np.abs(a[-1] - a[0]).mean())
        steps = np.abs(np.diff(a, axis=0))
        interior += float(steps[period - 1::period].mean())
    return seam / max(interior, 1e-6)


# ---------------------------------------------------------------- verdicts


def locate_object(img: np.ndarray):
    """(core, mask) of the object in a judging-scale landscape, or None; see `find_object`."""
    sky, ground = classify_sky(img), classify_ground(img)
    return find_object(img, sky, ground, find_horizon(img, sky, ground))


def describe_landscape(img: np.ndarray, nets=None) -> dict:
    """What the judge sees in a judging-scale landscape: sky, ground, horizon row and the object's colour,
    position (third of its core's centroid), shape (shape net, when `nets` are given) and masks."""
    sky, ground = classify_sky(img), classify_ground(img)
    horizon = find_horizon(img, sky, ground)
    seen = {"sky": sky, "ground": ground, "horizon": horizon, "object": None}
    found = find_object(img, sky, ground, horizon)
    if found is not None:
        core, mask = found
        third = int(np.nonzero(core)[1].mean() * 3 // img.shape[1])
        seen["object"] = {"color": nearest_palette(np.median(img[core], axis=0)),
                          "position": POSITIONS[min(third, 2)], "core": core, "mask": mask}
        if nets is not None:
            from .classifier import object_crop  # noqa: PLC0415

            seen["object"]["shape"] = nets.shapes([object_crop(img, core)])[0]
    return seen


def judge_landscape(img: np.ndarray, attrs: dict, nets=None) -> dict[str, bool]:
    seen = describe_landscape(img, nets)
    verdict = {"sky": seen["sky"] == attrs["sky"], "ground": seen["ground"] == attrs["ground"]}
    obj = seen["object"]
    for key, colour, shade in (("sun", SUN_COLORS.get(attrs["sky"]), (1.0, 1.0)), ("moon", MOON_COLOR, (0.75, 1.1))):
        if attrs.get(key) and colour is not None:  # the moon's craters shade it by up to a quarter
            sky = img[: seen["horizon"]].copy()
            if obj is not None:  # a white ball in the sky is not the moon
                sky[obj["mask"][: seen["horizon"]]] = 0
            verdict[key] = find_disk(sky, colour, seen["horizon"], shade)
    if attrs.get("object"):
        want = attrs["object"]
        verdict["object_color"] = obj is not None and obj["color"] == want["color"]
        verdict["object_position"] = obj is not None and obj["position"] == want["position"]
        if nets is not None:
            verdict["object_shape"] = obj is not None and obj.get("shape") == want["shape"]
    return verdict


def judge_material(image, attrs: dict, pattern: str | None = None, orientation: str | None = None,
                   tiled: bool = True) -> dict[str, bool]:
    """Colours (measured), pattern and orientation (as read by the world net, passed in), seamlessness."""
    verdict = {"colors": colors_match(material_colors(to_array(image), attrs["pattern"]), attrs)}
    if pattern is not None:
        verdict["pattern"] = pattern == attrs["pattern"]
    if orientation is not None and "orientation" in attrs:
        verdict["orientation"] = orientation == attrs["orientation"]
    if tiled:
        verdict["seamless"] = max(seam_ratio(image, 0), seam_ratio(image, 1)) <= SEAM_LIMIT
    return verdict


def judge_batch(images: list, records: list[dict], nets=None, tiled: bool = True):
    """Verdicts {attribute: bool} for every (image, record) pair, and the world-net features [N, 64] (None
    without nets). Landscape attributes: sky, ground, sun, moon, object colour / position / shape (those asked
    for); material attributes: colours, pattern, orientation (stripes), seamless (when `tiled`)."""
    arrays = [to_array(im) for im in images]
    labels, feats = nets.world_outputs(arrays) if nets is not None else ({}, None)
    verdicts = []
    for i, (image, img, attrs) in enumerate(zip(images, arrays, records)):
        if attrs["kind"] == "landscape":
            verdicts.append(judge_landscape(img, attrs, nets))
        else:
            verdicts.append(judge_material(image, attrs, labels["pattern"][i] if labels else None,
                                           labels["orientation"][i] if labels else None, tiled))
    return verdicts, feats


def judge(image, attrs: dict, nets=None) -> dict[str, bool]:
    """Whether `image` shows each attribute of `attrs` that it asks for (see `judge_batch`)."""
    return judge_batch([image], [attrs], nets)[0][0]
