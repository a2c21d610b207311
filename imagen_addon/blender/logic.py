"""Pure logic of the Blender add-on: no bpy import, tested by plain pytest (tests/blender/test_logic.py).

Request building, history records, status texts and the online-access rule (scene descriptions, node plans and
UV maths are in scene_logic.py). The bpy glue modules turn Blender data into the plain values these functions
take, and apply what they return.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Sequence

MAX_PROMPT_CHARS = 1000
MAX_SEED = 2**31 - 1  # Blender int properties are 32-bit signed; the runtime accepts up to 2**32 - 1
SIZE_MULTIPLE = 8
MIN_SIZE, MAX_SIZE = 8, 1024
SAMPLERS = (
    ("dpmpp", "DPM++ 2M", "Fast, good quality in 20-30 steps"),
    ("dpmpp_sde", "DPM++ 2M SDE", "Stochastic second-order: ancestral quality in 20-30 steps"),
    ("ddim", "DDIM", "Deterministic, good for reproducing an image"),
    ("ancestral", "Ancestral", "Stochastic; more variety, needs more steps"),
)
TILING = (
    ("none", "None", "No tiling"),
    ("x", "Horizontal", "Seamless left-right"),
    ("xy", "Both", "Seamless in both directions (textures)"),
)
PROP_PREFIX = "imagen_"


class RequestError(ValueError):
    """The user's settings can't make a request; the message says what to change."""


def addon_package(module_package: str) -> str:
    """Package name of the add-on (= the preferences' bl_idname) from a module inside `imagen_addon/blender/`.

    'bl_ext.user_default.imagen.imagen_addon.blender' -> 'bl_ext.user_default.imagen'; 'imagen.imagen_addon.blender'
    -> 'imagen'.
    """
    parts = module_package.split(".")
    if parts[-2:] != ["imagen_addon", "blender"] or len(parts) < 3:
        raise ValueError(f"not a module of imagen_addon.blender inside an add-on: {module_package!r}")
    return ".".join(parts[:-2])


# --- requests ------------------------------------------------------------------------------------------------


def snap_size(value: int) -> int:
    value = int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE
    return max(MIN_SIZE, min(MAX_SIZE, value))


def build_request(settings: dict[str, Any], mode: str = "text2img", init_image: bytes | None = None,
                  rng: random.Random | None = None) -> dict[str, Any]:
    """Scene settings (a plain dict, see properties.py) -> the JSON fields of `POST /v1/jobs`.

    A random seed is drawn here (not by the server) so that every history record can be reproduced.
    """
    prompt = str(settings.get("prompt", "")).strip()
    if mode in ("text2img", "img2img", "inpaint") and not prompt:
        raise RequestError("Enter a prompt first (or use Describe Scene to write one)")
    negative = str(settings.get("negative_prompt", "")).strip()
    for name, text in (("Prompt", prompt), ("Negative prompt", negative)):
        if len(text) > MAX_PROMPT_CHARS:
            raise RequestError(f"{name} is too long: {len(text)} characters, at most {MAX_PROMPT_CHARS}")
    if mode in ("img2img", "inpaint", "upscale") and not init_image:
        raise RequestError(f"{mode} needs an init image")
    if settings.get("random_seed", True):
        seed = (rng or random.Random()).randint(0, MAX_SEED)
    else:
        seed = max(0, min(MAX_SEED, int(settings.get("seed", 0))))
    request: dict[str, Any] = {
        "mode": mode,
        "prompt": prompt,
        "negative_prompt": negative,
        "seed": seed,
        "steps": max(1, min(250, int(settings.get("steps", 25)))),
        "sampler": settings.get("sampler", "dpmpp"),
        "guidance_scale": max(0.0, min(30.0, float(settings.get("guidance_scale", 5.0)))),
        "tiling": settings.get("tiling", "none"),
    }
    if mode == "upscale":  # the runtime's output is the input times its SR factor: sizes do not apply
        request["tiling"] = "x" if settings.get("panorama") else request["tiling"]  # seamless stays seamless
    elif settings.get("panorama"):
        request["panorama"] = True
        request["tiling"] = "x"
        if not settings.get("use_native_size", True):
            request["height"] = snap_size(min(int(settings.get("height", 256)), MAX_SIZE // 2))
    elif not settings.get("use_native_size", True):
        request["width"] = snap_size(settings.get("width", 256))
        request["height"] = snap_size(settings.get("height", 256))
    if init_image is not None:
        request["init_image"] = init_image
        if mode != "upscale":
            request["strength"] = max(0.0, min(1.0, float(settings.get("strength", 0.7))))
    return request


def upscale_request(settings: dict[str, Any], init_image: bytes, record: dict[str, Any] | None = None,
                    rng: random.Random | None = None) -> dict[str, Any]:
    """The request that upscales an image (PNG bytes) through the runtime's super-resolution stages.

    The text that guides the SR stages is the image's own prompt (its history `record`) when it has one: it
    describes that image, while the panel's prompt may already be about the next one. Otherwise the panel's prompt
    (may be empty: upscale needs none). Seed, steps and sampler come from the panel; the negative prompt is not
    used by upscale and is left out, so the history record of the result says what was used. A seamless image (its
    record's tiling "x" or "xy") is upscaled seamless; the panel's tiling is about the next generation, not this one.
    """
    prompt = str((record or {}).get("prompt") or settings.get("prompt", ""))
    tiling = str(((record or {}).get("settings") or {}).get("tiling") or "none")
    return build_request({**settings, "prompt": prompt, "negative_prompt": "", "tiling": tiling, "panorama": False},
                         mode="upscale", init_image=init_image, rng=rng)


def fit_request_to_model(request: dict[str, Any], health: dict[str, Any]) -> dict[str, Any]:
    """Snap width/height to the model's `size_multiple` (from /v1/health) so the runtime accepts them."""
    multiple = int((health.get("model") or {}).get("size_multiple") or SIZE_MULTIPLE)
    if multiple <= 0:
        return request
    lowest = -(-MIN_SIZE // multiple) * multiple
    fitted = dict(request)
    for key in ("width", "height"):
        if fitted.get(key):
            highest = (MAX_SIZE // 2 if fitted.get("panorama") else MAX_SIZE) // multiple * multiple
            fitted[key] = max(lowest, min(highest, int(round(fitted[key] / multiple)) * multiple))
    return fitted


def capture_size(render_width: int, render_height: int, settings: dict[str, Any], longest: int = 512) -> tuple[int, int]:
    """Size of the viewport capture sent as init image: the requested size, else the render aspect at `longest`."""
    if not settings.get("use_native_size", True) and not settings.get("panorama"):
        return snap_size(settings.get("width", 256)), snap_size(settings.get("height", 256))
    scale = longest / max(1, render_width, render_height)
    return max(MIN_SIZE, round(render_width * scale)), max(MIN_SIZE, round(render_height * scale))


# --- runtime connection ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeConfig:
    """A snapshot of the runtime preferences, taken on the main thread and handed to the worker thread."""

    mode: str = "LOCAL"  # "LOCAL": start/reuse a runtime on this computer; "REMOTE": connect to url + token
    url: str = ""
    token: str = ""
    python: str = ""
    model_dir: str = ""
    auto_start: bool = True
    state_dir: str = ""
    online_access: bool = False
    timeout: float = 30.0
    extra_paths: tuple[str, ...] = ()  # PYTHONPATH entries for the runtime (see runtime_python_paths)


def runtime_python_paths(python: str, current_executable: str, sys_path: Sequence[str]) -> tuple[str, ...]:
    """site-packages folders of this interpreter to hand to a runtime that runs with the same interpreter.

    With Blender's own Python (the self-contained build), the wheels Blender installed for the extension live in a
    site-packages folder on Blender's sys.path; a runtime started with another Python must not see them.
    """
    if not python or python != current_executable:
        return ()
    return tuple(p for p in sys_path if p.rstrip("/\\").endswith(("site-packages", "dist-packages")))


def is_loopback_url(url: str) -> bool:
    from ..runtime.client import RuntimeClientError, is_loopback

    try:
        return is_loopback(url)
    except RuntimeClientError:
        return False


def check_url_allowed(url: str, online_access: bool) -> str | None:
    """None when the add-on may connect to `url`, else the message to show (Blender's online-access rule)."""
    if is_loopback_url(url) or online_access:
        return None
    return (f"Online access is disabled in Blender (Preferences > System > Network), so the add-on only connects "
            f"to a runtime on this computer (127.0.0.1), not {url}. Allow online access or use a local runtime.")


# --- history -----------------------------------------------------------------------------------------------


def history_record(request: dict[str, Any], result: dict[str, Any] | None = None,
                   created: float | None = None) -> dict[str, Any]:
    """What is stored on a generated image: the request without image payloads, and the seed actually used."""
    result = result or {}
    settings = {k: v for k, v in request.items() if k not in ("init_image", "mask")}
    seed = result.get("seed", request.get("seed"))
    if seed is not None:
        settings["seed"] = seed
    for key in ("width", "height"):
        if result.get(key):
            settings[key] = result[key]
    return {"prompt": request.get("prompt", ""), "negative_prompt": request.get("negative_prompt", ""),
            "seed": seed, "mode": request.get("mode", "text2img"), "settings": settings,
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created or time.time()))}


def image_custom_props(record: dict[str, Any]) -> dict[str, Any]:
    """Custom properties for an image datablock (ID properties: str / 32-bit int / float)."""
    seed = record.get("seed")
    return {
        PROP_PREFIX + "prompt": record["prompt"],
        PROP_PREFIX + "negative_prompt": record.get("negative_prompt", ""),
        PROP_PREFIX + "seed": seed if isinstance(seed, int) and 0 <= seed <= MAX_SEED else str(seed),
        PROP_PREFIX + "mode": record.get("mode", "text2img"),
        PROP_PREFIX + "created": record.get("created", ""),
        PROP_PREFIX + "settings": json.dumps(record["settings"], sort_keys=True),
    }


def record_from_custom_props(props: dict[str, Any]) -> dict[str, Any] | None:
    if PROP_PREFIX + "prompt" not in props:
        return None
    try:
        settings = json.loads(props.get(PROP_PREFIX + "settings") or "{}")
    except (TypeError, json.JSONDecodeError):
        settings = {}
    return {"prompt": props[PROP_PREFIX + "prompt"], "negative_prompt": props.get(PROP_PREFIX + "negative_prompt", ""),
            "seed": props.get(PROP_PREFIX + "seed"), "mode": props.get(PROP_PREFIX + "mode", "text2img"),
            "created": props.get(PROP_PREFIX + "created", ""), "settings": settings}


def settings_from_record(record: dict[str, Any]) -> dict[str, Any]:
    """Scene setting values that reproduce a history record ("use these settings again")."""
    s = record.get("settings", {})
    out: dict[str, Any] = {"prompt": record.get("prompt", ""), "negative_prompt": record.get("negative_prompt", "")}
    try:
        seed = int(record.get("seed"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seed = None
    if seed is not None and 0 <= seed <= MAX_SEED:
        out.update(seed=seed, random_seed=False)
    for key in ("steps", "sampler", "guidance_scale", "tiling", "strength"):
        if key in s:
            out[key] = s[key]
    out["panorama"] = bool(s.get("panorama", False))
    if "width" in s and "height" in s and not out["panorama"]:
        out.update(width=int(s["width"]), height=int(s["height"]), use_native_size=False)
    elif out["panorama"] and "height" in s:
        out.update(height=int(s["height"]), use_native_size=False)
    return out


def output_filename(prompt: str, seed: Any, created: float | None = None) -> str:
    """A plain file name (no folder part) from the prompt and the seed the runtime reported: both are data, and a
    runtime on another machine must not be able to steer where the add-on writes."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(created or time.time()))
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40].strip("-") or "image"
    seed_part = re.sub(r"[^a-z0-9]+", "-", str(seed).lower()).strip("-")[:20].strip("-") or "none"
    return f"imagen_{stamp}_{seed_part}_{slug}.png"


def image_name(prompt: str) -> str:
    words = " ".join(prompt.split()[:6]) or "image"
    return f"Imagen {words}"[:60]


# --- status text -------------------------------------------------------------------------------------------


def progress_text(status: dict[str, Any]) -> str:
    state = status.get("status")
    if state == "queued":
        position = status.get("position")
        return "Queued" + (f" (position {position})" if position else "")
    if state == "running":
        text = f"Step {status.get('step', 0)}/{status.get('steps', 0)}"
        if (status.get("stage_count") or 1) > 1:
            text += f", stage {int(status.get('stage', 0)) + 1}/{status['stage_count']}"
        return text
    return {"done": "Done", "failed": "Failed", "cancelled": "Cancelled"}.get(str(state), str(state or ""))


def health_text(health: dict[str, Any]) -> str:
    model = health.get("model") or {}
    size = model.get("native_size") or []
    bits = [health.get("device", "?")]
    if model.get("hash"):
        bits.append(f"model {str(model['hash'])[:8]}")
    if len(size) == 2:
        bits.append(f"{size[0]}x{size[1]}")
    text = f"Runtime {'ready' if health.get('status') == 'ok' else health.get('status', '?')}: " + ", ".join(bits)
    if health.get("worker") not in (None, "ok"):
        text += f" (worker {health['worker']})"
    return text
