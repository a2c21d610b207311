"""Landscapes (`kind: landscape`): sky, ground, sun or moon, mountains, clouds and at most one object.

Rendering has two steps. `landscape_layout` draws the geometry first (horizon, disks, ridge line, object
placement), so tests and the evaluation can recompute it from the same seed; painting then adds colour and
texture. With `wrap_x` every x distance is measured around the image and all noise and ridges are periodic in x,
so the left edge continues the right edge (2:1 panoramas). Disk radii refer to the frame width `min(w, h)`, which
is the image width for square images and keeps panorama suns the same size as in a square view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .vocab import (GROUND_COLORS, LAVA_CRACK, MOON_COLOR, MOUNTAIN_COLORS, PALETTE, POSITIONS, SKY_GRADIENTS,
                    SUN_COLORS)
from .worlds_material import fbm, jitter, mix, periodic_noise

TRUNK = PALETTE["brown"]


@dataclass(frozen=True)
class Disk:
    """A sun or moon: centre and radius in pixels."""
    cx: float
    cy: float
    r: float


@dataclass(frozen=True)
class Placement:
    """The object: its bounding box is centred on `cx`, stands on row `base` and is `height` pixels tall."""
    shape: str
    color: str
    position: str
    cx: float
    base: float
    height: float


@dataclass(frozen=True)
class LandscapeLayout:
    """Geometry of one landscape; `ridge` is the mountain top row per column (None without mountains)."""
    width: int
    height: int
    wrap_x: bool
    horizon: int
    sun: Disk | None
    moon: Disk | None
    ridge: np.ndarray | None
    obj: Placement | None


def _ridge(w: int, h: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
    """A jagged, x-periodic mountain line rising 8-20 % of the height above the horizon."""
    x = (np.arange(w, dtype=np.float32) + 0.5) / w
    base_freq = max(1, w // h)
    profile = np.zeros(w, np.float32)
    for f in range(1, 25):  # integer frequencies: periodic over the width
        amp, phase = f**-1.2 * rng.uniform(0.5, 1.0), rng.random()
        profile += amp * 2 * np.abs((f * base_freq * x + phase) % 1 - 0.5)  # triangle waves give sharp peaks
    profile = (profile - profile.min()) / max(float(np.ptp(profile)), 1e-6)
    peak, floor = rng.uniform(0.08, 0.20) * h, rng.uniform(0.15, 0.45)
    return horizon - peak * (floor + (1 - floor) * profile)


def landscape_layout(attrs: dict, size: tuple[int, int], rng: np.random.Generator,
                     wrap_x: bool = False) -> LandscapeLayout:
    """Draw the geometry of a landscape (the first thing `render_landscape` draws from `rng`)."""
    w, h = size
    horizon = int(round(rng.uniform(0.45, 0.65) * h))
    ridge = _ridge(w, h, horizon, rng) if attrs.get("mountains") else None
    sky_floor = float(ridge.min()) if ridge is not None else float(horizon)
    disk = None
    if attrs.get("sun") or attrs.get("moon"):
        r = rng.uniform(0.06, 0.10) * min(w, h)
        cx = rng.uniform(0, w) if wrap_x else rng.uniform(r + 1, w - r - 1)
        lo, hi = r + 1, max(r + 1, sky_floor - 0.3 * r)
        cy = lo + (hi - lo) * rng.uniform(0.5 if attrs["sky"] == "sunset" else 0.0, 1.0)
        disk = Disk(cx, cy, r)
    obj = None
    if attrs.get("object"):
        o = attrs["object"]
        height = rng.uniform(0.15, 0.30) * h
        third = w / 3
        cx = (POSITIONS.index(o["position"]) + rng.uniform(0.25, 0.75)) * third
        if not wrap_x:  # keep the whole object in the frame (it stays within its third)
            cx = float(np.clip(cx, height / 2 + 1, w - height / 2 - 1))
        base = rng.uniform(horizon + 0.2 * (h - horizon), h - 0.04 * h)
        obj = Placement(o["shape"], o["color"], o["position"], cx, base, height)
    sun = disk if attrs.get("sun") else None
    moon = disk if attrs.get("moon") else None
    return LandscapeLayout(w, h, wrap_x, horizon, sun, moon, ridge, obj)


def _dx(w: int, cx: float, wrap_x: bool) -> np.ndarray:
    """x distance of pixel centres to `cx`, measured around the image when wrapping."""
    dx = np.arange(w, dtype=np.float32) + np.float32(0.5 - cx)
    return (dx + w / 2) % w - w / 2 if wrap_x else dx


def _dy(h: int, cy: float) -> np.ndarray:
    return (np.arange(h, dtype=np.float32) + np.float32(0.5 - cy))[:, None]


def _disk_alpha(lay: LandscapeLayout, disk: Disk, scale: float = 1.0) -> np.ndarray:
    d = np.hypot(_dx(lay.width, disk.cx, lay.wrap_x)[None, :], _dy(lay.height, disk.cy))
    return np.clip(disk.r * scale - d + 0.5, 0, 1), d


def cloud_alpha(lay: LandscapeLayout, rng: np.random.Generator, count: int) -> np.ndarray:
    """Soft cloud cover [horizon, w] in 0..0.92, covering at most 25 % of the sky (clouds dropped if needed)."""
    w, sky_h, ref = lay.width, lay.horizon, min(lay.width, lay.height)
    clouds = []
    for _ in range(count):
        cx, cy = rng.uniform(0, w), rng.uniform(0.1, 0.7) * sky_h
        cw = rng.uniform(0.12, 0.25) * ref
        ch = cw * rng.uniform(0.3, 0.45)
        density = np.zeros((sky_h, w), np.float32)
        for _ in range(int(rng.integers(3, 7))):
            px, py = cx + rng.uniform(-0.5, 0.5) * cw, cy + rng.uniform(-0.3, 0.2) * ch
            sx, sy = cw * rng.uniform(0.25, 0.4), ch * rng.uniform(0.4, 0.6)
            gx = np.exp(-((_dx(w, px % w, lay.wrap_x) / sx) ** 2))
            gy = np.exp(-((_dy(sky_h, py)[:, 0] / sy) ** 2))
            density += np.outer(gy, gx)
        clouds.append(density)
    while clouds:
        alpha = np.clip((sum(clouds) - 0.3) * 2.0, 0, 1) * 0.92
        if np.mean(alpha > 0.5) <= 0.25:
            return alpha
        clouds.pop()
    return np.zeros((sky_h, w), np.float32)


def _paint_sky(img, lay, attrs, rng):
    top, bottom = (jitter(c, rng, 8) for c in SKY_GRADIENTS[attrs["sky"]])
    t = np.clip((np.arange(lay.height, dtype=np.float32) + 0.5) / lay.horizon, 0, 1)[:, None, None]
    img[:] = top + (bottom - top) * t
    if attrs["sky"] == "night":  # >= 20 small white stars, clear of mountains and moon
        floor = int((lay.ridge.min() if lay.ridge is not None else lay.horizon) - 2)
        n = max(30, int(rng.integers(40, 70) * lay.width * lay.height / 128**2))
        ys, xs = rng.integers(0, max(floor, 1), 2 * n), rng.integers(0, lay.width, 2 * n)
        if lay.moon is not None:
            dist = np.hypot(_dx(lay.width, lay.moon.cx, lay.wrap_x)[xs], ys + 0.5 - lay.moon.cy)
            ys, xs = ys[dist > lay.moon.r + 1], xs[dist > lay.moon.r + 1]
        ys, xs = ys[:n], xs[:n]
        img[ys, xs] = rng.uniform(190, 255, (len(ys), 1))
    if lay.sun is not None:
        alpha, d = _disk_alpha(lay, lay.sun)
        sun_rgb = np.asarray(SUN_COLORS[attrs["sky"]], np.float32)
        glow = (0.35 if attrs["sky"] == "sunset" else 0.2) * np.exp(-((d / (2.2 * lay.sun.r)) ** 2))
        img[:] = mix(np.maximum(alpha, glow), sun_rgb, img)
    if lay.moon is not None:
        alpha, _ = _disk_alpha(lay, lay.moon)
        moon = np.asarray(MOON_COLOR, np.float32) * np.ones_like(img)
        for _ in range(3):  # a few soft craters
            ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.6) * lay.moon.r
            crater = Disk(lay.moon.cx + rad * np.cos(ang), lay.moon.cy + rad * np.sin(ang), lay.moon.r)
            moon *= (1 - 0.08 * _disk_alpha(lay, crater, rng.uniform(0.15, 0.3))[0])[..., None]
        img[:] = mix(alpha, moon, img)
    if attrs.get("clouds"):
        count = int(rng.integers(3, 7) if attrs["sky"] == "overcast" else rng.integers(2, 6))
        alpha = cloud_alpha(lay, rng, count)
        light, dark = (jitter(c, rng, 6) for c in ((246, 246, 248), (196, 199, 206)))
        shade = fbm(lay.horizon, lay.width, 2, 4, rng, 3)[..., None]
        img[: lay.horizon] = mix(alpha, dark + (light - dark) * shade, img[: lay.horizon])
    if lay.ridge is not None:
        ys = _dy(lay.horizon, 0)
        alpha = np.clip(ys - lay.ridge[None, :] + 0.5, 0, 1)
        haze = 0.94 + 0.12 * (ys - lay.ridge.min()) / max(lay.horizon - lay.ridge.min(), 1)
        tone = haze * (1 + 0.05 * (fbm(lay.horizon, lay.width, 2, 8, rng, 3) - 0.5))
        rgb = jitter(MOUNTAIN_COLORS[attrs["sky"]], rng, 6) * tone[..., None]
        img[: lay.horizon] = mix(alpha, rgb, img[: lay.horizon])


def _paint_ground(img, lay, attrs, rng):
    ground, gh, w = attrs["ground"], lay.height - lay.horizon, lay.width
    base = jitter(GROUND_COLORS[ground], rng, 8)
    t = ((np.arange(gh, dtype=np.float32) + 0.5) / gh)[:, None]
    if ground == "grass":
        tex = (1 + 0.16 * (fbm(gh, w, 3, 8, rng) - 0.5) + 0.1 * (periodic_noise(gh, w, 3, w // 2, rng) - 0.5))
        rgb = base * tex[..., None]
    elif ground == "sand":
        ripple = np.sin(2 * np.pi * (t * rng.integers(6, 12) / (0.3 + t) + 0.7 * fbm(gh, w, 2, 4, rng)))
        rgb = base * (1 + 0.04 * ripple + 0.06 * (fbm(gh, w, 4, 8, rng) - 0.5))[..., None]
    elif ground == "snow":
        rgb = np.clip(base * (1 + 0.05 * (fbm(gh, w, 3, 6, rng) - 0.5))[..., None], 0, 255)
    elif ground == "water":  # lighter horizontal streaks: noise stretched along x
        noise = periodic_noise(gh, w, max(2, gh // 3), 6 * max(1, w // lay.height), rng)
        streaks = np.clip((noise - 0.72) / 0.1, 0, 1) * 0.75
        rgb = mix(streaks, np.clip(base + (60, 70, 70), 0, 255), base * (1 + 0.06 * (t - 0.5))[..., None])
    else:  # lava: dark crust with bright cracks along level lines of noise
        crust = base * (0.88 + 0.2 * fbm(gh, w, 3, 6, rng))[..., None]
        cracks = np.clip(1 - np.abs(fbm(gh, w, 2, 5, rng) - 0.5) / 0.035, 0, 1)
        rgb = mix(cracks, np.asarray(LAVA_CRACK, np.float32), crust)
    darken = rng.uniform(0.12, 0.25)  # up to 25 % darker toward the bottom
    rgb = rgb * (1 - darken * t)[..., None]
    img[lay.horizon:] = rgb * (0.5 if attrs["sky"] == "night" else 1.0)


def object_layers(lay: LandscapeLayout, color: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(alpha [h, w], rgb [h, w, 3] or (3,)) layers of the object, back to front; [] without an object."""
    p = lay.obj
    if p is None:
        return []
    h = p.height
    dx = _dx(lay.width, p.cx, lay.wrap_x)[None, :]
    if p.shape == "ball":
        r = h / 2
        dy = _dy(lay.height, p.base - r)
        d = np.hypot(dx, dy)
        nz = np.sqrt(np.clip(1 - (d / r) ** 2, 0, 1))
        lambert = np.clip((-0.5 * dx - 0.6 * dy) / r + 0.62 * nz, 0, 1)
        shaded = color * (0.8 + 0.28 * lambert)[..., None]
        rgb = shaded + (255 - shaded) * (0.5 * lambert**30)[..., None]
        return [(np.clip(r - d + 0.5, 0, 1), rgb)]
    y = _dy(lay.height, p.base)  # negative above the base row
    if p.shape == "cube":
        s = h / 1.3
        d = 0.3 * s
        x = dx + h / 2  # 0 at the left edge of the bounding box
        front = np.minimum(np.minimum(x, s - x), np.minimum(-y, y + s))
        t = -s - y  # depth into the top face
        top = np.minimum(np.minimum(t, d - t), np.minimum(x - t, s + t - x))
        u = x - s  # depth into the side face
        side = np.minimum(np.minimum(u, d - u), np.minimum(y + s + u, -u - y))
        light = color + 0.35 * (255 - color)
        return [(np.clip(a + 0.5, 0, 1), c) for a, c in ((front, color * 0.97), (top, light), (side, color * 0.7))]
    trunk = np.minimum(0.06 * h - np.abs(dx), np.minimum(-y, y + 0.45 * h))
    foliage = np.zeros((lay.height, lay.width), np.float32)
    for ox, oy, r in ((0, -0.7, 0.3), (-0.2, -0.5, 0.22), (0.2, -0.5, 0.22)):
        foliage = np.maximum(foliage, np.clip(r * h - np.hypot(dx - ox * h, y - oy * h) + 0.5, 0, 1))
    shade = 1.05 - 0.2 * np.clip((y + h) / (0.75 * h), 0, 1) - 0.06 * np.clip(dx / (0.4 * h), -1, 1)
    return [(np.clip(trunk + 0.5, 0, 1), np.asarray(TRUNK, np.float32)),
            (foliage, color * shade[..., None])]


def render_landscape(attrs: dict, size: tuple[int, int], rng: np.random.Generator,
                     wrap_x: bool = False) -> np.ndarray:
    """A landscape for `attrs` at `size` = (w, h), uint8 [h, w, 3]; `wrap_x` makes it wrap horizontally."""
    w, h = size
    lay = landscape_layout(attrs, (w, h), rng, wrap_x)
    img = np.empty((h, w, 3), np.float32)
    _paint_sky(img, lay, attrs, rng)
    _paint_ground(img, lay, attrs, rng)
    if lay.obj is not None:
        p = lay.obj
        shadow = np.hypot(_dx(w, p.cx, wrap_x)[None, :] / (0.45 * p.height), _dy(h, p.base) / (0.06 * p.height))
        img *= (1 - 0.35 * np.clip(1.5 - shadow, 0, 1))[..., None]
        for alpha, rgb in object_layers(lay, jitter(PALETTE[p.color], rng, 10)):
            img[:] = mix(alpha, rgb, img)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
