"""Continuous-time Gaussian diffusion in log-SNR (Kingma et al. 2021, "Variational Diffusion Models").

The forward process is variance preserving: x_t = alpha_t * x0 + sigma_t * eps with alpha^2 + sigma^2 = 1 and
log_snr(t) = log(alpha^2 / sigma^2), decreasing in t in [0, 1]. Schedules are pure functions of t.
The network predicts `eps` (Ho et al. 2020) or `v = alpha * eps - sigma * x0` (Salimans & Ho 2022, Sec. 4);
both are turned into an x0 estimate, which is what the samplers (core/samplers.py) consume.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("eps", "v")


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "cosine"
    prediction: str = "v"
    log_snr_min: float = -15.0        # cosine schedule bounds (t = 1 and t = 0)
    log_snr_max: float = 15.0
    cond_drop_prob: float = 0.1       # null text in training, for classifier-free guidance (Ho & Salimans 2022)
    min_snr_gamma: float = 5.0        # Min-SNR loss weighting (Hang et al. 2023); 0 disables it
    noise_aug_max: float = 0.5        # SR stages: training augmentation level t_aug ~ U(0, noise_aug_max)
    noise_aug_level: float = 0.2      # SR stages: default augmentation level at sampling (Imagen Sec. 2.5)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if not self.log_snr_min < self.log_snr_max:
            raise ValueError("log_snr_min must be below log_snr_max")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")
        if self.min_snr_gamma < 0:
            raise ValueError("min_snr_gamma must be >= 0")
        if not 0.0 <= self.noise_aug_level <= 1.0 or not 0.0 <= self.noise_aug_max <= 1.0:
            raise ValueError("noise augmentation levels are times in [0, 1]")

    def to_dict(self) -> dict:
        return asdict(self)


def log_snr_cosine(t: torch.Tensor, log_snr_min: float = -15.0, log_snr_max: float = 15.0) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021) in log-SNR form: log_snr = -2 log tan(a t + b),
    with a, b chosen so that log_snr(0) = log_snr_max and log_snr(1) = log_snr_min."""
    b = math.atan(math.exp(-0.5 * log_snr_max))
    a = math.atan(math.exp(-0.5 * log_snr_min)) - b
    return -2.0 * torch.log(torch.tan(a * t + b))


def log_snr_linear(t: torch.Tensor) -> torch.Tensor:
    """The DDPM linear-beta schedule in continuous time (Kingma et al. 2021, App. K): alpha^2 = exp(-1e-4 - 10 t^2)."""
    return -torch.log(torch.expm1(1e-4 + 10.0 * t ** 2))


def log_snr(t: torch.Tensor, cfg: DiffusionConfig) -> torch.Tensor:
    if cfg.schedule == "cosine":
        return log_snr_cosine(t, cfg.log_snr_min, cfg.log_snr_max)
    return log_snr_linear(t)


def alpha_sigma(log_snr_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha^2 = sigmoid(log_snr), sigma^2 = sigmoid(-log_snr)."""
    return torch.sigmoid(log_snr_).sqrt(), torch.sigmoid(-log_snr_).sqrt()


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def q_sample(x0: torch.Tensor, log_snr_: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_t = alpha_t x0 + sigma_t eps (the forward process, VDM Eq. 1)."""
    alpha, sigma = alpha_sigma(log_snr_)
    return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * eps


def to_x0(out: torch.Tensor, x_t: torch.Tensor, log_snr_: torch.Tensor, prediction: str) -> torch.Tensor:
    """The x0 estimate implied by the network output: eps -> (x_t - sigma eps) / alpha, v -> alpha x_t - sigma v."""
    alpha, sigma = (_bcast(v, x_t) for v in alpha_sigma(log_snr_))
    if prediction == "eps":
        return (x_t - sigma * out) / alpha.clamp(min=1e-4)
    return alpha * x_t - sigma * out


def target(x0: torch.Tensor, eps: torch.Tensor, log_snr_: torch.Tensor, prediction: str) -> torch.Tensor:
    if prediction == "eps":
        return eps
    alpha, sigma = (_bcast(v, x0) for v in alpha_sigma(log_snr_))
    return alpha * eps - sigma * x0


def loss_weight(log_snr_: torch.Tensor, prediction: str, min_snr_gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weighting (Hang et al. 2023, Eq. 9) expressed for the eps or v target; 1 when disabled."""
    if min_snr_gamma <= 0:
        return torch.ones_like(log_snr_)
    snr = log_snr_.exp()
    clipped = snr.clamp(max=min_snr_gamma)
    return clipped / snr if prediction == "eps" else clipped / (snr + 1)


def diffusion_loss(out: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, log_snr_: torch.Tensor,
                   cfg: DiffusionConfig) -> torch.Tensor:
    """Weighted MSE between the network output and its target, averaged over pixels then the batch."""
    per_sample = (out.float() - target(x0, eps, log_snr_, cfg.prediction).float()).square().mean(dim=(1, 2, 3))
    return (loss_weight(log_snr_, cfg.prediction, cfg.min_snr_gamma) * per_sample).mean()
