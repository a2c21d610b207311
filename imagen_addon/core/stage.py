"""One stage of the cascade: an Efficient U-Net plus its diffusion parameterisation (after EDM's preconditioning
wrapper: the network knows nothing of noise schedules; this class turns it into a denoiser and a loss).

A base stage generates from text alone; a super-resolution (SR) stage is also conditioned on the previous stage's
image, upsampled to its size and corrupted with Gaussian noise at an augmentation level t_aug
("noise conditioning augmentation", Imagen Sec. 2.5 / Ho et al. 2021, Cascaded Diffusion Models).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .diffusion import DiffusionConfig, diffusion_loss, log_snr, q_sample, to_x0
from .samplers import randn
from .unet import EfficientUNet, UNetConfig


@dataclass(frozen=True)
class StageConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    lowres_size: int = 0              # 0 = base stage; else the size of the image this SR stage upsamples

    def __post_init__(self):
        if isinstance(self.unet, dict):
            object.__setattr__(self, "unet", UNetConfig(**self.unet))
        if isinstance(self.diffusion, dict):
            object.__setattr__(self, "diffusion", DiffusionConfig(**self.diffusion))
        if self.is_sr != (self.unet.lowres_channels > 0):
            raise ValueError("an SR stage (lowres_size > 0) needs unet.lowres_channels > 0, and a base stage none")
        if self.is_sr and not 0 < self.lowres_size < self.image_size:
            raise ValueError(f"lowres_size {self.lowres_size} must be below the stage's image_size {self.image_size}")

    @property
    def is_sr(self) -> bool:
        return self.lowres_size > 0

    @property
    def image_size(self) -> int:
        return self.unet.image_size

    @property
    def scale(self) -> int:
        return self.image_size // self.lowres_size if self.is_sr else 1

    def to_dict(self) -> dict:
        return asdict(self)


def upsample(lowres: torch.Tensor, size: tuple[int, int], tiling: str = "none") -> torch.Tensor:
    """Bilinear upsampling of the low-resolution conditioning to the stage's (H, W). A seamless image (`tiling` "x"
    or "xy") is padded circularly by one pixel first and the result cropped back, so that its wrapped edges are
    interpolated from the opposite side exactly as an interior pixel would be (an integer scale factor)."""
    if tiling == "none":
        return F.interpolate(lowres, size=size, mode="bilinear", align_corners=False, antialias=False)
    (h, w), (lh, lw) = size, lowres.shape[-2:]
    if h % lh or w % lw:
        raise ValueError(f"a seamless upsample needs an integer scale, got {lh}x{lw} -> {h}x{w}")
    py = 1 if tiling == "xy" else 0
    padded = F.pad(lowres, (1, 1, 0, 0), mode="circular")
    if py:
        padded = F.pad(padded, (0, 0, 1, 1), mode="circular")
    sy, sx = h // lh, w // lw
    up = F.interpolate(padded, size=(h + 2 * py * sy, w + 2 * sx), mode="bilinear", align_corners=False)
    return up[..., py * sy:py * sy + h, sx:sx + w]


def downsample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Anti-aliased downsampling (how SR training pairs and init images are made)."""
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


class Stage(nn.Module):
    def __init__(self, cfg: StageConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = EfficientUNet(cfg.unet)

    def augment_lowres(self, lowres: torch.Tensor, size: tuple[int, int], t_aug: torch.Tensor,
                       generators=None, tiling: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
        """Upsample the low-res image and noise it to level t_aug: returns (conditioning, aug log_snr)."""
        up = upsample(lowres, size, tiling)
        aug_log_snr = log_snr(t_aug.to(up.device), self.cfg.diffusion)
        noise = randn(up.shape, generators, up.device, up.dtype)
        return q_sample(up, aug_log_snr, noise), aug_log_snr

    def forward(self, x_t, log_snr_, text, text_mask, lowres=None, aug_log_snr=None, tiling="none"):
        """The x0 estimate at x_t (the denoiser the samplers call, with conditioning bound by the caller)."""
        out = self.unet(x_t, log_snr_, text, text_mask, lowres, aug_log_snr, tiling)
        return to_x0(out.float(), x_t.float(), log_snr_, self.cfg.diffusion.prediction)

    def loss(self, x0: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
             lowres: torch.Tensor | None = None, tiling: str = "none") -> torch.Tensor:
        """Training loss for images x0 in [-1, 1] (DDPM's simple loss, Ho et al. 2020, Eq. 14, with the eps or v target
        and optional Min-SNR weighting). Text is dropped with probability cond_drop_prob (classifier-free guidance);
        SR stages get `lowres` (the downsampled image) noised at a random augmentation level. Seamless data trains
        with the padding it will be sampled with (`tiling`)."""
        cfg = self.cfg.diffusion
        b = x0.shape[0]
        t = torch.rand(b, device=x0.device)
        log_snr_ = log_snr(t, cfg)
        eps = torch.randn_like(x0)
        x_t = q_sample(x0, log_snr_, eps)
        if cfg.cond_drop_prob > 0:
            keep = torch.rand(b, device=x0.device) >= cfg.cond_drop_prob
            text_mask = text_mask & keep[:, None]
        cond, aug_log_snr = None, None
        if self.cfg.is_sr:
            if lowres is None:
                raise ValueError("an SR stage is trained with `lowres`")
            t_aug = torch.rand(b, device=x0.device) * cfg.noise_aug_max
            cond, aug_log_snr = self.augment_lowres(lowres, x0.shape[-2:], t_aug, tiling=tiling)
        out = self.unet(x_t, log_snr_, text, text_mask, cond, aug_log_snr, tiling)
        return diffusion_loss(out, x0, eps, log_snr_, cfg)


class StageLoss(nn.Module):
    """The training objective as a module, so that DDP (accelerate) wraps a forward that computes the loss."""

    def __init__(self, stage: Stage):
        super().__init__()
        self.stage = stage

    def forward(self, x0, text, text_mask, lowres=None, tiling="none"):
        return self.stage.loss(x0, text, text_mask, lowres, tiling)
