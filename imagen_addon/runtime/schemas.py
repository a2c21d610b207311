"""Request and response models of the runtime HTTP API (docs/runtime-api.md is the contract).

Everything a client sends is validated here, at the boundary, with explicit bounds: the pydantic models check
types and ranges, `decode_image` checks image payloads (base64 length before decoding, decoded byte count, format,
pixel count). `resolve_settings` and `upscale_size` then check what depends on the loaded model (sizes must be
multiples of its `size_multiple`) and fill in defaults (seed, native size, strength per mode).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import secrets
import warnings
from typing import Literal

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_PROMPT_CHARS = 1000
MAX_STEPS = 250
MAX_GUIDANCE = 30.0
MIN_SIZE, MAX_SIZE = 8, 1024
MAX_SEED = 2**32 - 1
MAX_IMAGE_BYTES = 16 * 1024 * 1024  # decoded size of one image payload
MAX_IMAGE_SIDE = 4096  # pixels per side of an uploaded image (and so <= 4096 * 4096 pixels)
# base64 of MAX_IMAGE_BYTES, plus room for a "data:image/png;base64," prefix.
MAX_IMAGE_B64_CHARS = 4 * ((MAX_IMAGE_BYTES + 2) // 3) + 64
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")

Mode = Literal["text2img", "img2img", "inpaint", "upscale"]
Sampler = Literal["ancestral", "ddim", "dpmpp", "dpmpp_sde"]
Tiling = Literal["none", "x", "xy"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]

NEEDS_PROMPT = ("text2img", "img2img", "inpaint")
NEEDS_IMAGE = ("img2img", "inpaint", "upscale")
DEFAULT_STRENGTH = {"img2img": 0.7, "inpaint": 1.0}


def _check_text(value: str, field: str) -> str:
    """Reject text that cannot be stored in a PNG text chunk or a UTF-8 JSON file."""
    if "\x00" in value:
        raise ValueError(f"{field} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field} contains invalid unicode (a lone surrogate); send UTF-8 text") from None
    return value


class JobRequest(BaseModel):
    """Body of `POST /v1/jobs`. Unknown fields are rejected so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", strict=True)  # no "5" -> 5, true -> 1 coercion

    mode: Mode = "text2img"
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="null: the server picks one and reports it")
    steps: int = Field(20, ge=1, le=MAX_STEPS)
    sampler: Sampler = "dpmpp"
    guidance_scale: float = Field(5.0, ge=0.0, le=MAX_GUIDANCE, allow_inf_nan=False)
    width: int | None = Field(None, ge=MIN_SIZE, le=MAX_SIZE, description="null: model native width")
    height: int | None = Field(None, ge=MIN_SIZE, le=MAX_SIZE, description="null: model native height")
    tiling: Tiling = "none"
    panorama: bool = Field(False, description="2:1 image (width = 2 * height) that tiles horizontally")
    init_image: str | None = Field(None, description="base64 PNG/JPEG/WebP; img2img, inpaint and upscale")
    mask: str | None = Field(None, description="base64 PNG/JPEG/WebP, white = regenerate; inpaint only")
    strength: float | None = Field(
        None, ge=0.0, le=1.0, allow_inf_nan=False, description="null: 0.7 for img2img, 1.0 for inpaint"
    )

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data):
        # One error for all unknown fields, before field validation: a body of a million unknown keys would
        # otherwise make a million error records (gigabytes of memory, minutes of CPU).
        if isinstance(data, dict) and not data.keys() <= cls.model_fields.keys():
            unknown = [str(key)[:40] for key in data if key not in cls.model_fields]
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise ValueError(f"{', '.join(unknown[:5])}{more}: unknown field; see /openapi.json for the accepted "
                             "fields")
        return data

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _valid_text(cls, value: str, info) -> str:
        return _check_text(value, info.field_name)

    @field_validator("init_image", "mask")
    @classmethod
    def _payload_size(cls, value: str | None, info) -> str | None:
        # Checked on the base64 text, before anything is decoded.
        if value is not None and len(value) > MAX_IMAGE_B64_CHARS:
            mb = MAX_IMAGE_BYTES // (1024 * 1024)
            raise ValueError(f"{info.field_name} is too large: at most {mb} MB of image data (base64 encoded)")
        return value

    @model_validator(mode="after")
    def _mode_requirements(self) -> "JobRequest":
        if self.mode in NEEDS_PROMPT and not self.prompt.strip():
            raise ValueError(f"prompt: mode {self.mode!r} needs a non-empty prompt")
        if self.mode in NEEDS_IMAGE and not self.init_image:
            raise ValueError(f"init_image: mode {self.mode!r} needs an init_image (base64 PNG/JPEG/WebP)")
        if self.mode == "inpaint" and not self.mask:
            raise ValueError("mask: mode 'inpaint' needs a mask (base64 PNG, white = regenerate)")
        if self.mask and self.mode != "inpaint":
            raise ValueError(f"mask: only mode 'inpaint' takes a mask, not {self.mode!r}")
        if self.panorama and self.tiling == "xy":
            raise ValueError("tiling: a panorama tiles along x only; send tiling 'none' or 'x' with panorama")
        if self.panorama and self.width is not None and self.height is not None and self.width != 2 * self.height:
            raise ValueError("width: a panorama has width = 2 * height; send only height (or width)")
        return self


class BadImage(ValueError):
    """An image payload that cannot be used; the message says what to fix."""


def decode_image(data: str, field: str, mode: str) -> Image.Image:
    """Decode a base64 (or base64 data URL) PNG/JPEG/WebP into a loaded PIL image converted to `mode`.

    Raises BadImage for anything else: bad base64, too many bytes, another format, more than MAX_IMAGE_SIDE
    pixels per side (checked from the header, before the pixels are decoded), truncated or corrupt data.
    """
    text = data
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise BadImage(f"{field}: a data URL must look like 'data:image/png;base64,<data>'")
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(f"{field} is not valid base64; send the image file's bytes base64 encoded") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise BadImage(f"{field} is too large: at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB of image data")
    if not raw:
        raise BadImage(f"{field} is empty; send a PNG, JPEG or WebP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
            width, height = image.size
            if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
                raise BadImage(
                    f"{field} is {width}x{height} pixels; at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} is accepted"
                )
            image.load()
            return image.convert(mode)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{field} has too many pixels (decompression bomb limit)") from None
    except UnidentifiedImageError:
        raise BadImage(f"{field} is not a PNG, JPEG or WebP image") from None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error, ...) for corrupt files
        raise BadImage(f"{field} could not be decoded ({type(exc).__name__}: {exc}); send a valid image") from None


def resolve_settings(req: JobRequest, model_info: dict) -> dict:
    """Turn a validated request into the job's full settings (seed picked, sizes resolved); ValueError if the
    size does not suit the model."""
    seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED + 1)
    settings = {"mode": req.mode, "prompt": req.prompt, "negative_prompt": req.negative_prompt, "seed": seed,
                "steps": req.steps, "sampler": req.sampler, "guidance_scale": req.guidance_scale,
                "width": None, "height": None, "tiling": "none", "panorama": False, "strength": None}
    if req.mode == "upscale":  # the size follows from the image (see upscale_size); strength does not apply
        settings.update(tiling="x" if req.panorama else req.tiling)  # a seamless image stays seamless
        return settings
    native_w, native_h = model_info["native_size"]
    width, height = req.width, req.height
    if req.panorama:
        if height is None and width is not None:
            if width % 2:
                raise ValueError(f"width: a panorama has width = 2 * height, so {width} must be even")
            height = width // 2
        height = height or native_h
        width = 2 * height
    width, height = width or native_w, height or native_h
    multiple = model_info["size_multiple"]
    for name, value in (("width", width), ("height", height)):
        if value % multiple or not MIN_SIZE <= value <= MAX_SIZE:
            extra = " (a panorama is 2 * height wide)" if req.panorama else ""
            raise ValueError(f"{name}: {value} must be a multiple of {multiple} between {MIN_SIZE} and "
                             f"{MAX_SIZE}{extra}")
    strength = req.strength if req.strength is not None else DEFAULT_STRENGTH.get(req.mode)
    settings.update(width=width, height=height, tiling="x" if req.panorama else req.tiling,
                    panorama=req.panorama, strength=strength if req.mode in DEFAULT_STRENGTH else None)
    return settings


def upscale_size(image_size: tuple[int, int], model_info: dict) -> tuple[int, int]:
    """Output (W, H) of upscaling an image of `image_size`; ValueError if the model cannot produce it."""
    stages = model_info["stages"]
    factor = stages[-1]["image_size"] // stages[0]["image_size"]
    if factor < 2:
        raise ValueError("mode: this model has no super-resolution stage, so it cannot upscale")
    width, height = image_size[0] * factor, image_size[1] * factor
    multiple = model_info["size_multiple"]
    if width > MAX_SIZE or height > MAX_SIZE or width % multiple or height % multiple:
        limit = MAX_SIZE // factor
        raise ValueError(f"init_image: upscaling {image_size[0]}x{image_size[1]} by {factor} gives {width}x{height};"
                         f" send an image whose sides are multiples of {max(1, multiple // math.gcd(multiple, factor))}"
                         f" and at most {limit} px")
    return width, height


def format_validation_errors(errors) -> str:
    """One readable line out of pydantic's error list: 'steps: Input should be ...; prompt: ...'."""
    parts = []
    for err in list(errors)[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        kind, msg = err.get("type", ""), str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if kind == "json_invalid":
            msg, loc = "the request body is not valid JSON", ""
        elif kind == "extra_forbidden":
            msg = "unknown field; see /openapi.json for the accepted fields"
        elif not loc and kind in ("missing", "model_attributes_type", "dict_type"):
            msg = "the request body must be a JSON object"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


class ErrorResponse(BaseModel):
    """Every 4xx (and the last-resort 500) answer."""

    error: str


class JobCreated(BaseModel):
    id: str
    status: JobStatus
    position: int = Field(description="jobs ahead of this one in the queue (0 = next to start)")


class JobResult(BaseModel):
    seed: int
    width: int
    height: int
    file: str = Field(description="file name in the server's output folder (chosen by the server)")
    settings: dict


class JobState(BaseModel):
    """Body of `GET /v1/jobs/{id}` and `POST /v1/jobs/{id}/cancel`."""

    id: str
    status: JobStatus
    position: int | None
    progress: float = Field(ge=0.0, le=1.0)
    stage: int
    stage_count: int
    step: int
    steps: int
    preview: str | None = Field(description="base64 PNG of the current prediction, at most 128 px")
    error: str | None
    result: JobResult | None


class StageInfo(BaseModel):
    image_size: int
    kind: str


class ModelInfo(BaseModel):
    path: str
    hash: str
    stages: list[StageInfo]
    text_encoder: str
    native_size: tuple[int, int]
    size_multiple: int


class QueueInfo(BaseModel):
    length: int
    max: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    api: int
    model: ModelInfo
    device: str
    worker: str = Field(description="'ok', or 'crashed: <message>' after a model error (the worker keeps going)")
    queue: QueueInfo
