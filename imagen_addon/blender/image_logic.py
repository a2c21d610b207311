"""Pure image maths of the add-on: no bpy, no numpy; tested by plain pytest (tests/blender/test_image_logic.py).

PNG encoding (to send an image without a file on disk to the runtime, and to save the PBR maps) and PBR maps made
from an albedo (base colour) image: a normal map and a roughness map.

Pixels come as Blender stores them in `Image.pixels`: a flat float sequence, `channels` values per pixel, rows from
the bottom of the image to the top, values 0..1 (8-bit images: their stored values, sRGB for generated images).

Normal map. The albedo's luminance L (Rec. 709 weights) is read as a height field h. Its gradient is estimated with
the 3x3 Sobel operator (I. Sobel and G. Feldman, "A 3x3 isotropic gradient operator for image processing", 1968):
the central difference (h[x+1] - h[x-1]) / 2 smoothed across with weights 1 2 1, divided by 8 so that a ramp
h = a * x gives exactly a. The normal of the surface z = strength * h(x, y) (x right, y up, in pixels) is
n = normalize(-strength * dh/dx, -strength * dh/dy, 1), stored as (n + 1) / 2: a tangent-space normal map in the
OpenGL convention (green = +Y = up in the image) that Blender's Normal Map node expects. A flat area is
(0.5, 0.5, 1.0); a surface rising to the right leans left (red < 0.5). Along the axes a seamless image tiles
(tiling "x": left-right, "xy": both) the neighbours wrap around, so the map tiles too; other edges repeat the
edge pixel (clamp).

Roughness. Albedo does not determine roughness, so this is a heuristic, the one "bitmap to material" tools use:
dark and detailed areas (crevices, dirt, grain) are rougher, bright smooth ones glossier:
r = clamp(ROUGH_MIN + (ROUGH_MAX - ROUGH_MIN) * (1 - L) + DETAIL * |grad h|, 0, 1).
On a flat area r lies in [ROUGH_MIN, ROUGH_MAX] and decreases as L increases.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

LUMA = (0.2126, 0.7152, 0.0722)  # Rec. 709 luminance weights
DEFAULT_STRENGTH = 2.0
ROUGH_MIN, ROUGH_MAX, DETAIL = 0.3, 0.9, 1.0
MAP_KINDS = ("normal", "roughness")
PNG_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)
MAX_NAME_BYTES = 63  # longest ID name in Blender 4.x (5.0 allows 255)

Rows = list[list[float]]


def check_size(pixels: Sequence[float], width: int, height: int, channels: int) -> None:
    """ValueError unless `pixels` holds width x height pixels of `channels` values."""
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise ValueError(f"image size must be at least 1x1, not {width}x{height}")
    if channels not in PNG_COLOR_TYPE:
        raise ValueError(f"an image has 1 to 4 channels, not {channels}")
    if len(pixels) != width * height * channels:
        raise ValueError(f"{len(pixels)} pixel values for a {width}x{height} image of {channels} channels "
                         f"(expected {width * height * channels})")


def wrap_axes(tiling: str | None) -> tuple[bool, bool]:
    """(wrap left-right, wrap bottom-top) of an image generated with `tiling` ("none", "x", "xy")."""
    return tiling in ("x", "xy"), tiling == "xy"


# --- PBR maps ---------------------------------------------------------------------------------------------------


def luminance(pixels: Sequence[float], width: int, height: int, channels: int = 4) -> Rows:
    """Rows (bottom to top) of luminance in [0, 1]; a 1- or 2-channel image is its first channel."""
    check_size(pixels, width, height, channels)
    if channels >= 3:
        wr, wg, wb = LUMA
        flat = [wr * r + wg * g + wb * b for r, g, b in
                zip(pixels[0::channels], pixels[1::channels], pixels[2::channels])]
    else:
        flat = list(pixels[0::channels])
    flat = [0.0 if not v > 0.0 else 1.0 if v > 1.0 else v for v in flat]  # NaN -> 0
    return [flat[y * width:(y + 1) * width] for y in range(height)]


def _pad(row: list[float], wrap: bool) -> list[float]:
    return [row[-1] if wrap else row[0], *row, row[0] if wrap else row[-1]]


def gradient(h: Rows, wrap_x: bool = False, wrap_y: bool = False) -> tuple[Rows, Rows]:
    """Sobel estimates of (dh/dx, dh/dy) in height units per pixel, y up; rows as given (bottom to top)."""
    diff, smooth = [], []
    for row in h:  # the kernel is separable: horizontal difference / smoothing first, then vertical
        p = _pad(row, wrap_x)
        diff.append([c - a for a, c in zip(p, p[2:])])
        smooth.append([a + b + b + c for a, b, c in zip(p, p[1:], p[2:])])
    gx, gy = [], []
    last = len(h) - 1
    for y in range(len(h)):
        below = y - 1 if y > 0 else (last if wrap_y else 0)
        above = y + 1 if y < last else (0 if wrap_y else last)
        gx.append([(a + b + b + c) * 0.125 for a, b, c in zip(diff[below], diff[y], diff[above])])
        gy.append([(c - a) * 0.125 for a, c in zip(smooth[below], smooth[above])])
    return gx, gy


def normal_map(gx: Rows, gy: Rows, strength: float = DEFAULT_STRENGTH) -> list[float]:
    """Flat RGB values in [0, 1] (rows as given) of the tangent-space normals (OpenGL, green up)."""
    s = -float(strength)
    dxs = [s * v for row in gx for v in row]
    dys = [s * v for row in gy for v in row]
    halves = [0.5 / math.sqrt(x * x + y * y + 1.0) for x, y in zip(dxs, dys)]
    out = [0.0] * (3 * len(halves))
    out[0::3] = [x * f + 0.5 for x, f in zip(dxs, halves)]
    out[1::3] = [y * f + 0.5 for y, f in zip(dys, halves)]
    out[2::3] = [f + 0.5 for f in halves]
    return out


def roughness_map(h: Rows, gx: Rows, gy: Rows, lo: float = ROUGH_MIN, hi: float = ROUGH_MAX,
                  detail: float = DETAIL) -> list[float]:
    """Flat roughness values in [0, 1] (rows as given); see the module docstring for the heuristic."""
    span = hi - lo
    out: list[float] = []
    for row, row_x, row_y in zip(h, gx, gy):
        out += [lo + span * (1.0 - v) + detail * math.sqrt(dx * dx + dy * dy)
                for v, dx, dy in zip(row, row_x, row_y)]
    return [0.0 if not v > 0.0 else 1.0 if v > 1.0 else v for v in out]


@dataclass(frozen=True)
class PbrMaps:
    width: int
    height: int
    normal: list[float]  # RGB per pixel, rows bottom to top
    roughness: list[float]  # one value per pixel, rows bottom to top


def make_maps(pixels: Sequence[float], width: int, height: int, channels: int = 4, tiling: str | None = "none",
              strength: float = DEFAULT_STRENGTH) -> PbrMaps:
    """Normal and roughness maps of an albedo image (Blender pixel layout; ValueError on a size mismatch)."""
    h = luminance(pixels, width, height, channels)
    gx, gy = gradient(h, *wrap_axes(tiling))
    return PbrMaps(width, height, normal_map(gx, gy, strength), roughness_map(h, gx, gy))


# --- names --------------------------------------------------------------------------------------------------------


def map_image_name(source_name: str, kind: str) -> str:
    """'Imagen a brick wall' -> 'Imagen a brick wall Normal'; the base is shortened to keep the suffix visible
    within Blender's name length."""
    suffix = f" {kind.capitalize()}"
    room = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    base = source_name.encode("utf-8")[:room].decode("utf-8", "ignore")
    return base + suffix


def map_file_name(source_path: str, source_name: str, kind: str) -> str:
    """A plain file name (no folder part) for a map: the source file's stem (else the image name) + _<kind>.png."""
    stem = re.split(r"[\\/]", source_path)[-1].rsplit(".", 1)[0] if source_path else ""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem or source_name).strip("-")[:80] or "image"
    return f"{stem}_{kind}.png"


# --- PNG --------------------------------------------------------------------------------------------------------


def linear_to_srgb(values: Sequence[float], channels: int) -> list[float]:
    """Scene-linear values (float images) to sRGB for an 8-bit file; alpha (the 2nd / 4th channel) stays as is."""
    colour = {0} if channels < 3 else {0, 1, 2}
    out = list(values)
    for c in colour:
        out[c::channels] = [v * 12.92 if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055
                            for v in (min(1.0, max(0.0, x)) for x in out[c::channels])]
    return out


def encode_png(values: Sequence[float], width: int, height: int, channels: int = 4, bottom_up: bool = True) -> bytes:
    """An 8-bit PNG of float values in [0, 1] (clamped, NaN -> 0). `bottom_up`: rows come bottom to top
    (Blender's order) and are flipped to the PNG's top to bottom."""
    check_size(values, width, height, channels)
    data = bytes([0 if not v > 0.0 else 255 if v >= 1.0 else int(v * 255.0 + 0.5) for v in values])
    stride = width * channels
    order = range(height - 1, -1, -1) if bottom_up else range(height)
    raw = b"".join(b"\x00" + data[y * stride:(y + 1) * stride] for y in order)

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, PNG_COLOR_TYPE[channels], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def image_format(data: bytes) -> str | None:
    """'PNG', 'JPEG' or 'WEBP' (what the runtime accepts) from a file's first bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None
