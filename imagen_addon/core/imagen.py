"""Imagen: a frozen text encoder feeding a cascade of pixel-space diffusion U-Nets (Saharia et al. 2022, Fig. A.4).

    imagen = Imagen.from_pretrained()                     # the bundled model (or a folder)
    [image] = imagen.generate("a blue ball on green grass under a clear sky", seed=1)

Stage 0 generates at low resolution from text; every later stage is a super-resolution model conditioned on the
previous image (upsampled, noise-augmented) and the text. All stages are fully convolutional, so other sizes
(e.g. 2:1 panoramas) and circular padding (seamless textures) work at sampling time.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import checkpoint as ckpt
from .diffusion import log_snr, q_sample
from .samplers import (Cancelled, classifier_free_guidance, dynamic_threshold, get_sampler, inpaint, randn,
                       static_threshold)
from .stage import Stage, StageConfig, downsample
from .text import DEFAULT_ENCODER, DEFAULT_MAX_LENGTH, load_text_encoder
from .unet import TILINGS, UNetConfig

__all__ = ["Imagen", "ImagenConfig", "Cancelled", "Progress", "default_model_dir", "tiny_config"]


def default_model_dir() -> Path:
    """The bundled model shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "weights" / "default"


@dataclass(frozen=True)
class ImagenConfig:
    stages: tuple[StageConfig, ...]
    text_encoder: str = DEFAULT_ENCODER
    max_text_length: int = DEFAULT_MAX_LENGTH

    def __post_init__(self):
        stages = tuple(StageConfig(**s) if isinstance(s, dict) else s for s in self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages or stages[0].is_sr:
            raise ValueError("a cascade starts with a base (text-to-image) stage")
        for prev, stage in zip(stages, stages[1:]):
            if not stage.is_sr or stage.lowres_size != prev.image_size:
                raise ValueError(f"stage at {stage.image_size} px must be an SR stage with lowres_size "
                                 f"{prev.image_size} (the previous stage's size)")
        if len({s.unet.text_dim for s in stages}) != 1:
            raise ValueError("all stages must share the text encoder's width (unet.text_dim)")


def tiny_config(text_dim: int = 384) -> ImagenConfig:
    """A two-stage cascade (16 px base, 16 -> 32 SR) that builds in milliseconds: for tests."""
    base = UNetConfig(image_size=16, base_channels=16, channel_mults=(1, 2), num_res_blocks=(1, 1),
                      cross_attn_resolutions=(8,), head_dim=8, groups=4, text_dim=text_dim)
    sr = UNetConfig(image_size=32, lowres_channels=3, base_channels=16, channel_mults=(1, 2), num_res_blocks=(1, 1),
                    cross_attn_resolutions=(), self_attn=False, head_dim=8, groups=4, text_dim=text_dim)
    return ImagenConfig(stages=(StageConfig(unet=base), StageConfig(unet=sr, lowres_size=16)))


@dataclass
class Progress:
    """What a generation callback receives after every sampler step."""
    stage: int
    stage_count: int
    step: int
    steps: int
    x0: torch.Tensor = field(repr=False)

    def preview(self, max_size: int = 128):
        """The current x0 estimate of the first image, as a small PIL image."""
        image = to_pil(self.x0[:1])[0]
        image.thumbnail((max_size, max_size))
        return image


def to_pil(x: torch.Tensor) -> list:
    from PIL import Image  # noqa: PLC0415

    arr = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def from_pil(image, size: tuple[int, int] | None = None) -> torch.Tensor:
    """PIL image -> [1, C, H, W] in [-1, 1] (RGB, or L for masks), resized to (W, H) if given."""
    import numpy as np  # noqa: PLC0415

    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), resample=3)  # bicubic
    arr = np.asarray(image, dtype=np.float32)
    arr = arr[..., None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0


class Imagen(nn.Module):
    def __init__(self, config: ImagenConfig, device: str | torch.device = "cpu"):
        super().__init__()
        self.config = config
        self.stages = nn.ModuleList(Stage(s) for s in config.stages)
        self.model_hash = "untrained"
        self.to(device)

    # ---- text ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def text_encoder(self):
        return load_text_encoder(self.config.text_encoder, self.config.max_text_length, self.device)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = self.text_encoder.encode(prompts)
        return tokens.to(self.device), mask.to(self.device)

    # ---- sizes -----------------------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Output sizes must be multiples of this, so every stage's U-Net can downsample its input exactly. It is also
        the cascade's shift symmetry: with circular padding (`tiling`), rolling every stage's noise by this many
        output pixels rolls the generated image by as many (tested), so no column pair of a tiled image, the wrap
        included, is drawn differently from the pairs at the same phase of this grid."""
        multiple, later_scale = 1, 1
        for stage in reversed(self.config.stages):
            need = later_scale * 2 ** (len(stage.unet.channel_mults) - 1)
            multiple = multiple * need // math.gcd(multiple, need)
            later_scale *= stage.scale
        return multiple

    def stage_sizes(self, size: tuple[int, int] | None) -> list[tuple[int, int]]:
        """(W, H) of every stage for a final output size (W, H); None = the trained size."""
        final = self.config.stages[-1].image_size
        w, h = size or (final, final)
        m = self.size_multiple
        if w < m or h < m or w % m or h % m:
            raise ValueError(f"size {w}x{h} is not possible: width and height must be positive multiples of {m}")
        sizes = []
        for stage in reversed(self.config.stages):
            sizes.append((w, h))
            w, h = w // stage.scale, h // stage.scale
        return sizes[::-1]

    def info(self) -> dict:
        final = self.config.stages[-1].image_size
        return {"stages": [{"image_size": s.image_size, "kind": "sr" if s.is_sr else "base"}
                           for s in self.config.stages],
                "text_encoder": self.config.text_encoder, "model_hash": self.model_hash,
                "native_size": (final, final), "size_multiple": self.size_multiple,
                "parameters": sum(p.numel() for p in self.parameters())}

    # ---- sampling --------------------------------------------------------------------------------------
    def _sample_stage(self, k, text, mask, uncond_text, uncond_mask, size, generators, *, steps, sampler,
                      guidance_scale, tiling, lowres, noise_aug_level, init, strength, inpaint_mask, threshold,
                      callback):
        stage, cfg = self.stages[k], self.config.stages[k]
        b, (w, h), device = len(generators), size, self.device
        cond = {"text": text, "text_mask": mask}
        uncond = {"text": uncond_text, "text_mask": uncond_mask}
        if cfg.is_sr:
            t_aug = torch.full((b,), cfg.diffusion.noise_aug_level if noise_aug_level is None else noise_aug_level)
            aug_cond, aug_log_snr = stage.augment_lowres(lowres, (h, w), t_aug, generators, tiling)
            for c in (cond, uncond):
                c.update(lowres=aug_cond, aug_log_snr=aug_log_snr)
        model = lambda x, l, **c: stage(x, l, tiling=tiling, **c)  # noqa: E731
        denoiser = classifier_free_guidance(model, cond, uncond, guidance_scale)
        if threshold == "static":
            denoiser = static_threshold(denoiser)
        elif threshold:
            denoiser = dynamic_threshold(denoiser, float(threshold))

        t_start, n = 1.0, steps
        known = None if init is None else downsample(init, (h, w)).expand(b, -1, -1, -1)
        if known is not None:
            t_start, n = strength, max(1, round(steps * strength))
            if inpaint_mask is not None:
                m = downsample(inpaint_mask, (h, w)).expand(b, -1, -1, -1).clamp(0, 1)
                denoiser = inpaint(denoiser, known, m)
        if known is not None and strength == 0:
            return known
        t = torch.linspace(t_start, 0.0, n + 1, device=device)
        log_snrs = log_snr(t, cfg.diffusion)
        noise = randn((b, cfg.unet.channels, h, w), generators, device)
        x = noise if known is None else q_sample(known, log_snrs[0].expand(b), noise)

        def on_step(i, total, x_, x0):
            if callback is not None:
                return callback(Progress(k, len(self.stages), i + 1, total, x0))
            return None

        return get_sampler(sampler)(denoiser, x, log_snrs, generators=generators, callback=on_step).clamp(-1, 1)

    def generate(self, prompts: str | Sequence[str], *, negative_prompt: str | None = None,
                 seed: int | Sequence[int] | None = None, steps: int = 20, sampler: str = "dpmpp",
                 guidance_scale: float | Sequence[float] = 5.0, size: tuple[int, int] | None = None,
                 tiling: str = "none", init_image=None, strength: float = 0.7, mask=None,
                 callback: Callable[[Progress], bool | None] | None = None, count: int = 1,
                 noise_aug_level: float | None = None, threshold: float | str | None = 0.995,
                 stages: range | None = None, lowres_image=None) -> list:
        """Text to image (and image to image, inpainting) through the whole cascade. Returns PIL images.

        seed: image i uses seed + i (or seeds[i]): the same seed gives the same image whatever the batch.
        guidance_scale: the base stage's weight (prompt following is decided there; SR stages then run unguided,
        at half the cost) or one value per stage. size: (W, H) of the final image. tiling: none | x | xy.
        init_image + strength in [0, 1]: start every stage from the init image noised to t = strength (SDEdit).
        mask (white = regenerate): inpainting. threshold: dynamic-thresholding percentile, "static" or None.
        callback(Progress) after every step; returning False cancels with `Cancelled`."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        prompts = [p for p in prompts for _ in range(count)]
        if not prompts:
            raise ValueError("no prompt given")
        if tiling not in TILINGS:
            raise ValueError(f"tiling must be one of {TILINGS}, got {tiling!r}")
        if steps < 1:
            raise ValueError("steps must be >= 1")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        seeds = self._seeds(seed, len(prompts))
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        stage_ids = list(stages if stages is not None else range(len(self.stages)))
        scales = [guidance_scale] + [1.0] * (len(self.stages) - 1) if isinstance(guidance_scale, (int, float)) \
            else list(guidance_scale)
        if len(scales) != len(self.stages):
            raise ValueError(f"guidance_scale needs one value per stage ({len(self.stages)})")
        sizes = self.stage_sizes(size)
        init = None if init_image is None else from_pil(init_image.convert("RGB")).to(self.device)
        inpaint_mask = None if mask is None else ((from_pil(mask.convert("L")) + 1) / 2).to(self.device)
        lowres = None if lowres_image is None else from_pil(lowres_image.convert("RGB"), sizes[stage_ids[0] - 1]) \
            .to(self.device).expand(len(prompts), -1, -1, -1)
        with torch.inference_mode():
            text, text_mask = self.encode(prompts)
            if negative_prompt:
                uncond_text, uncond_mask = self.encode([negative_prompt] * len(prompts))
            else:
                uncond_text, uncond_mask = torch.zeros_like(text[:, :1]), torch.zeros_like(text_mask[:, :1])
            x = lowres
            for k in stage_ids:
                x = self._sample_stage(
                    k, text, text_mask, uncond_text, uncond_mask, sizes[k], generators, steps=steps,
                    sampler=sampler, guidance_scale=float(scales[k]), tiling=tiling, lowres=x,
                    noise_aug_level=noise_aug_level, init=init, strength=strength, inpaint_mask=inpaint_mask,
                    threshold=threshold, callback=callback)
        images = to_pil(x)
        for image, p, s in zip(images, prompts, seeds):
            image.info.update({"prompt": p, "seed": str(s)})
        return images

    def upscale(self, image, prompt: str = "", *, size: tuple[int, int] | None = None, **kwargs):
        """Run only the SR stages on any image: its size times the SR factor (or `size`, the final (W, H))."""
        if len(self.stages) < 2:
            raise ValueError("this model has no super-resolution stage")
        factor = math.prod(s.scale for s in self.config.stages[1:])
        size = size or (image.width * factor, image.height * factor)
        return self.generate(prompt, size=size, stages=range(1, len(self.stages)), lowres_image=image,
                             **kwargs)[0]

    @staticmethod
    def _seeds(seed, n: int) -> list[int]:
        if seed is None:
            seed = secrets.randbelow(2 ** 31)
        if isinstance(seed, int):
            return [seed + i for i in range(n)]
        seeds = [int(s) for s in seed]
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} images")
        return seeds

    # ---- training and checkpoints -------------------------------------------------------------------
    def train(self, dataset=True, **overrides):
        """Train every stage on an image-caption dataset (folder path); see `imagen_addon.train`.
        (`train(True/False)` keeps torch's meaning: switch training mode.)"""
        if isinstance(dataset, bool):
            return super().train(dataset)
        from ..train.trainer import train_imagen  # noqa: PLC0415

        return train_imagen(self, dataset, **overrides)

    def save_pretrained(self, model_dir: str | Path, dtype: torch.dtype | None = None) -> None:
        model_dir = Path(model_dir)
        names = [f"stage_{k}" for k in range(len(self.stages))]
        for name, stage in zip(names, self.stages):
            ckpt.atomic_write_json(model_dir / name / "config.json", stage.cfg.to_dict())
            ckpt.save_weights(stage.state_dict(), model_dir / name / ckpt.WEIGHTS, dtype)
        ckpt.atomic_write_json(model_dir / ckpt.INDEX, {
            "format": ckpt.FORMAT, "format_version": ckpt.FORMAT_VERSION, "stages": names,
            "text_encoder": self.text_encoder.identity, "max_text_length": self.config.max_text_length})
        self.model_hash = ckpt.folder_hash(model_dir)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, device: str | torch.device = "cpu",
                        text_encoder: str | None = None) -> "Imagen":
        """Load a model folder (default: the bundled model). `text_encoder` must match the recorded one."""
        model_dir = Path(model_dir) if model_dir else default_model_dir()
        index = ckpt.read_index(model_dir)
        recorded = index.get("text_encoder", {})
        spec = text_encoder or recorded.get("name", DEFAULT_ENCODER)
        stages = []
        for name in index["stages"]:
            try:
                stages.append(StageConfig(**ckpt.read_json(model_dir / name / "config.json")))
            except (TypeError, ValueError) as e:
                raise ckpt.CheckpointError(f"{model_dir / name / 'config.json'}: invalid config ({e})") from e
        config = ImagenConfig(stages=tuple(stages), text_encoder=spec,
                              max_text_length=index.get("max_text_length", DEFAULT_MAX_LENGTH))
        ckpt.check_encoder(recorded, load_text_encoder(spec, config.max_text_length, device).identity, model_dir)
        imagen = cls(config)
        for name, stage in zip(index["stages"], imagen.stages):
            path = model_dir / name / ckpt.WEIGHTS
            ckpt.load_state_into(stage, ckpt.load_weights(path), path)
        imagen.model_hash = ckpt.folder_hash(model_dir)
        # channels_last: 1.2x per 128x128 image on CPU (oneDNN convolutions without layout reorders; BENCHMARKS.md,
        # fast paths). Same values: the files and the model hash do not change, results agree to 1/255.
        return imagen.to(device, memory_format=torch.channels_last).eval()
