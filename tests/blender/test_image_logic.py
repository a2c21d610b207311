"""Pure image maths of the add-on (imagen_addon/blender/image_logic.py): PBR maps and PNG encoding; no bpy.

Pixels are laid out as Blender's `Image.pixels`: rows from the bottom of the image to the top. Normal maps follow
the OpenGL convention Blender's Normal Map node expects: red = +X (right), green = +Y (up in the image).
"""

from __future__ import annotations

import io
import math
import random
import time
from array import array

import pytest

from imagen_addon.blender import image_logic as il


def image(width, height, value, channels=4):
    """Blender-layout pixels with grey level value(x, y) (y = 0 is the bottom row), alpha 1."""
    out = []
    for y in range(height):
        for x in range(width):
            v = value(x, y)
            out += [v] * min(channels, 3) + [1.0] * (channels - 3)
    return array("f", out)


def normal_at(maps, x, y):
    i = 3 * (y * maps.width + x)
    return tuple(maps.normal[i:i + 3])


def expected_normal(dx, dy, strength):
    nx, ny = -strength * dx, -strength * dy
    length = math.sqrt(nx * nx + ny * ny + 1)
    return (nx / length + 1) / 2, (ny / length + 1) / 2, (1 / length + 1) / 2


def close(a, b, tol=1e-5):
    return all(abs(p - q) < tol for p, q in zip(a, b))


@pytest.mark.parametrize("tiling", ["none", "x", "xy"])
def test_flat_image_gives_flat_normals_and_constant_roughness(tiling):
    maps = il.make_maps(image(5, 4, lambda x, y: 0.4), 5, 4, tiling=tiling)
    assert all(close(normal_at(maps, x, y), (0.5, 0.5, 1.0)) for x in range(5) for y in range(4))
    assert len(set(maps.roughness)) == 1 and len(maps.roughness) == 20


def test_ramp_to_the_right_leans_left_with_the_sobel_slope():
    width, height, strength = 9, 5, 3.0
    slope = 0.05  # height units per pixel
    maps = il.make_maps(image(width, height, lambda x, y: slope * x), width, height, strength=strength)
    want = expected_normal(slope, 0.0, strength)
    assert want[0] < 0.5 and want[1] == 0.5
    for y in range(height):
        for x in range(1, width - 1):
            assert close(normal_at(maps, x, y), want), (x, y, normal_at(maps, x, y), want)


def test_ramp_upwards_leans_down_opengl_green_up():
    """Rows go bottom to top: a surface rising towards the top of the image faces down (green < 0.5)."""
    maps = il.make_maps(image(4, 7, lambda x, y: 0.1 * y), 4, 7, strength=1.0)
    r, g, b = normal_at(maps, 2, 3)
    assert close((r, g, b), expected_normal(0.0, 0.1, 1.0)) and g < 0.5 and r == pytest.approx(0.5)


def test_strength_scales_the_tilt_and_zero_is_flat():
    pixels = image(6, 6, lambda x, y: 0.1 * x)
    tilts = [0.5 - normal_at(il.make_maps(pixels, 6, 6, strength=s), 3, 3)[0] for s in (0.0, 1.0, 4.0)]
    assert tilts[0] == pytest.approx(0.0) and 0 < tilts[1] < tilts[2]


def test_edges_clamp_unless_the_image_tiles():
    width, height = 6, 5
    pixels = image(width, height, lambda x, y: 0.1 * x)  # a ramp to the right: jumps back at the seam
    clamped = il.make_maps(pixels, width, height, tiling="none")
    wrapped = il.make_maps(pixels, width, height, tiling="x")
    # Clamped: the edge repeats its pixel, a one-sided half slope, still leaning left.
    assert close(normal_at(clamped, 0, 2), expected_normal(0.05, 0, il.DEFAULT_STRENGTH))
    assert close(normal_at(clamped, width - 1, 2), expected_normal(0.05, 0, il.DEFAULT_STRENGTH))
    # Wrapped: across the seam the height drops from 0.5 to 0, so the edges lean right.
    assert normal_at(wrapped, 0, 2)[0] > 0.5 and normal_at(wrapped, width - 1, 2)[0] > 0.5
    assert normal_at(wrapped, 2, 2) == normal_at(clamped, 2, 2)  # the interior does not change


def test_x_tiling_wraps_only_left_right():
    pixels = image(4, 6, lambda x, y: 0.1 * y)
    none, x_only, both = (il.make_maps(pixels, 4, 6, tiling=t) for t in ("none", "x", "xy"))
    assert none.normal == x_only.normal
    assert normal_at(both, 1, 0)[1] > 0.5 and normal_at(none, 1, 0)[1] < 0.5


def test_wrapped_maps_of_a_shifted_seamless_image_are_shifted():
    rng = random.Random(3)
    width, height = 7, 5
    values = [[rng.random() for _ in range(width)] for _ in range(height)]
    shift = 3

    def maps_of(v):
        return il.make_maps(image(width, height, v), width, height, tiling="xy")

    base = maps_of(lambda x, y: values[y][x])
    moved = maps_of(lambda x, y: values[(y + 1) % height][(x + shift) % width])
    for y in range(height):
        for x in range(width):
            assert close(normal_at(moved, x, y), normal_at(base, (x + shift) % width, (y + 1) % height))


def test_roughness_in_range_and_decreasing_with_luminance():
    levels = [0.0, 0.2, 0.5, 0.8, 1.0]
    rough = [il.make_maps(image(3, 3, lambda x, y, v=v: v), 3, 3).roughness[4] for v in levels]
    assert rough == sorted(rough, reverse=True) and len(set(rough)) == len(rough)
    assert rough[0] == pytest.approx(il.ROUGH_MAX) and rough[-1] == pytest.approx(il.ROUGH_MIN)
    rng = random.Random(0)
    wild = array("f", [rng.uniform(-2, 3) for _ in range(8 * 8 * 4)])
    wild[5] = float("nan")
    maps = il.make_maps(wild, 8, 8)
    assert all(0.0 <= v <= 1.0 for v in maps.roughness) and all(0.0 <= v <= 1.0 for v in maps.normal)


def test_detail_makes_rougher_than_flat_of_the_same_luminance():
    checker = il.make_maps(image(6, 6, lambda x, y: 0.3 + 0.4 * ((x + y) % 2)), 6, 6)
    flat = il.make_maps(image(6, 6, lambda x, y: 0.5), 6, 6)
    assert sum(checker.roughness) > sum(flat.roughness)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_any_channel_count(channels):
    maps = il.make_maps(image(3, 2, lambda x, y: 0.2 * x, channels), 3, 2, channels)
    assert len(maps.normal) == 18 and len(maps.roughness) == 6 and normal_at(maps, 1, 0)[0] < 0.5


@pytest.mark.parametrize("size, channels", [((4, 4), 4), ((0, 3), 4), ((3, 0), 4), ((2, 2), 5), ((2, 2), 0)])
def test_bad_sizes_raise_value_error(size, channels):
    pixels = array("f", [0.5] * (4 * 4 * 4 - 1))  # one value short of 4x4 RGBA
    with pytest.raises(ValueError):
        il.make_maps(pixels, size[0], size[1], channels)
    with pytest.raises(ValueError):
        il.encode_png(pixels, size[0], size[1], channels)


def test_256_pixels_square_is_fast():
    rng = random.Random(1)
    pixels = array("f", [rng.random() for _ in range(256 * 256 * 4)])
    start = time.perf_counter()
    maps = il.make_maps(pixels, 256, 256, tiling="xy")
    il.encode_png(maps.normal, 256, 256, 3)
    il.encode_png(maps.roughness, 256, 256, 1)
    assert time.perf_counter() - start < 10.0  # ~0.6 s on a busy 2-core machine


def test_png_round_trip_flips_blender_rows():
    Image = pytest.importorskip("PIL.Image")
    pixels = image(3, 2, lambda x, y: [[0.0, 0.5, 1.0], [0.2, 0.4, 2.0]][y][x], channels=4)
    png = il.encode_png(pixels, 3, 2, 4)
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.size == (3, 2) and decoded.mode == "RGBA"
        assert decoded.getpixel((0, 0)) == (51, 51, 51, 255)  # PNG row 0 = top = Blender's last row
        assert decoded.getpixel((2, 0)) == (255, 255, 255, 255)  # clamped
        assert decoded.getpixel((1, 1)) == (128, 128, 128, 255)
    for channels, mode in ((1, "L"), (2, "LA"), (3, "RGB")):
        with Image.open(io.BytesIO(il.encode_png([0.5] * 4 * channels, 2, 2, channels))) as decoded:
            assert decoded.mode == mode
    assert il.image_format(png) == "PNG"


def test_linear_to_srgb_keeps_alpha():
    out = il.linear_to_srgb([0.0, 0.5, 1.0, 0.5], 4)
    assert out[0] == 0.0 and out[1] == pytest.approx(0.7354, abs=1e-3) and out[2] == pytest.approx(1.0)
    assert out[3] == 0.5
    assert il.linear_to_srgb([0.5, 0.25], 2)[1] == 0.25


def test_image_format():
    assert il.image_format(b"\xff\xd8\xff\xe0rest") == "JPEG"
    assert il.image_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert il.image_format(b"BM....") is None and il.image_format(b"") is None


def test_wrap_axes():
    assert [il.wrap_axes(t) for t in ("none", "x", "xy", None)] == [(False, False), (True, False), (True, True),
                                                                     (False, False)]


def test_map_names():
    assert il.map_image_name("Imagen a brick wall", "normal") == "Imagen a brick wall Normal"
    long = il.map_image_name("Imagen " + "é" * 60, "roughness")
    assert long.endswith("é Roughness") and len(long.encode("utf-8")) <= 63
    assert il.map_file_name("/out/imagen_20250101_5_brick.png", "x", "normal") == "imagen_20250101_5_brick_normal.png"
    assert il.map_file_name("C:\\out\\wall.jpg", "x", "roughness") == "wall_roughness.png"
    name = il.map_file_name("", "Imagen ../a/b wall", "normal")
    assert name == "Imagen-a-b-wall_normal.png" and "/" not in name and ".." not in name
    assert il.map_file_name("", "...", "normal") == "image_normal.png"
