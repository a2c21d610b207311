"""Samplers: stateless loops over one denoiser callable (after k-diffusion's `sampling.py`).

A denoiser is any callable `denoiser(x, log_snr) -> x0` where x is a variance-preserving noisy image and
log_snr a [B] tensor. Every sampler has the same signature

    sample_xxx(denoiser, x, log_snrs, *, generators=None, callback=None) -> x0

where `log_snrs` is the increasing grid of noise levels to visit (`x` is at `log_snrs[0]`), `generators` one
torch.Generator per sample (so a seed gives the same image whatever the batch), and `callback(i, n, x, x0)` is
called after each step; returning False cancels (raises `Cancelled`). No gradient mode is imposed: callers wrap
sampling in `torch.inference_mode()` (Imagen.generate does) or keep gradients for guidance research. Guidance, thresholding and inpainting are
denoiser wrappers at the bottom of this file, not sampler flags.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .diffusion import alpha_sigma

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS = ("ancestral", "ddim", "dpmpp", "dpmpp_sde")


class Cancelled(Exception):
    """Raised when a sampling callback asks to stop."""


def randn(shape: Sequence[int], generators: Sequence[torch.Generator] | None, device=None,
          dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of shape [B, ...], sample i drawn from generators[i] (per-sample seeds)."""
    if generators is None:
        return torch.randn(*shape, device=device, dtype=dtype)
    if len(generators) != shape[0]:
        raise ValueError(f"need one generator per sample: {len(generators)} for a batch of {shape[0]}")
    return torch.stack([torch.randn(*shape[1:], generator=g, dtype=dtype) for g in generators]).to(device)


def _step_done(callback, i, n, x, x0):
    if callback is not None and callback(i, n, x, x0) is False:
        raise Cancelled()


def _levels(log_snrs: torch.Tensor, x: torch.Tensor, i: int):
    return log_snrs[i].expand(x.shape[0]).to(x.device), log_snrs[i + 1].expand(x.shape[0]).to(x.device)


def sample_ancestral(denoiser: Denoiser, x, log_snrs, *, generators=None, callback=None):
    """Ancestral sampling from the posterior q(x_s | x_t, x0) (DDPM, Ho et al. 2020, Alg. 2), in the log-SNR form of
    VDM (Kingma et al. 2021, App. A.4): with c = -expm1(log_snr_t - log_snr_s),
    mean = alpha_s (x_t (1 - c) / alpha_t + c x0), var = sigma_s^2 c."""
    n = len(log_snrs) - 1
    x0 = x
    for i in range(n):
        lt, ls = _levels(log_snrs, x, i)
        x0 = denoiser(x, lt)
        (a_t, _), (a_s, s_s) = alpha_sigma(lt), alpha_sigma(ls)
        c = -torch.expm1(lt - ls)
        c, a_t, a_s, s_s = (v.view(-1, 1, 1, 1) for v in (c, a_t, a_s, s_s))
        x = a_s * (x * (1 - c) / a_t + c * x0)
        if i < n - 1:
            x = x + (s_s ** 2 * c).sqrt() * randn(x.shape, generators, x.device, x.dtype)
        _step_done(callback, i, n, x, x0)
    return x


def sample_ddim(denoiser: Denoiser, x, log_snrs, *, eta: float = 0.0, generators=None, callback=None):
    """DDIM (Song et al. 2021, Eq. 12) in VP form: x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z with
    c = eta (sigma_s / sigma_t) sqrt(1 - alpha_t^2 / alpha_s^2). eta = 0 is deterministic; eta = 1 is ancestral."""
    n = len(log_snrs) - 1
    x0 = x
    for i in range(n):
        lt, ls = _levels(log_snrs, x, i)
        x0 = denoiser(x, lt)
        (a_t, s_t), (a_s, s_s) = alpha_sigma(lt), alpha_sigma(ls)
        a_t, s_t, a_s, s_s = (v.view(-1, 1, 1, 1) for v in (a_t, s_t, a_s, s_s))
        eps = (x - a_t * x0) / s_t
        c = eta * (s_s / s_t) * (1 - (a_t / a_s) ** 2).clamp(min=0).sqrt()
        x = a_s * x0 + (s_s ** 2 - c ** 2).clamp(min=0).sqrt() * eps
        if eta > 0 and i < n - 1:
            x = x + c * randn(x.shape, generators, x.device, x.dtype)
        _step_done(callback, i, n, x, x0)
    return x


def _dpmpp_2m(denoiser: Denoiser, x, log_snrs, sde: bool, generators, callback):
    """The multistep loop both DPM-Solver++(2M) forms share, in lambda = log_snr / 2, h = lambda_s - lambda_t:
    D = x0_t + (x0_t - x0_prev) / 2r with r = h_prev / h (first order, D = x0_t, on the first and the last step);
    ODE: x_s = (sigma_s / sigma_t) x_t - alpha_s expm1(-h) D;
    SDE: x_s = (sigma_s / sigma_t) e^-h x_t + alpha_s (1 - e^-2h) D + sigma_s sqrt(1 - e^-2h) z (no noise last)."""
    n = len(log_snrs) - 1
    x0_prev, h_prev = None, None
    x0 = x
    for i in range(n):
        lt, ls = _levels(log_snrs, x, i)
        x0 = denoiser(x, lt)
        (_, s_t), (a_s, s_s) = alpha_sigma(lt), alpha_sigma(ls)
        h = (ls - lt) / 2
        s_t, a_s, s_s, hv = (v.view(-1, 1, 1, 1) for v in (s_t, a_s, s_s, h))
        if x0_prev is None or i == n - 1:
            d = x0  # first step (no history) and last step (to log_snr_max) are first order
        else:
            r = (h_prev / h).view(-1, 1, 1, 1)
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        if sde:
            c = -torch.expm1(-2 * hv)  # 1 - e^-2h
            x = (s_s / s_t) * torch.exp(-hv) * x + a_s * c * d
            if i < n - 1:
                x = x + s_s * c.sqrt() * randn(x.shape, generators, x.device, x.dtype)
        else:
            x = (s_s / s_t) * x - a_s * torch.expm1(-hv) * d
        x0_prev, h_prev = x0, h
        _step_done(callback, i, n, x, x0)
    return x


def sample_dpmpp_2m(denoiser: Denoiser, x, log_snrs, *, generators=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), multistep second order, deterministic (see `_dpmpp_2m`)."""
    return _dpmpp_2m(denoiser, x, log_snrs, False, generators, callback)


def sample_dpmpp_2m_sde(denoiser: Denoiser, x, log_snrs, *, generators=None, callback=None):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, DPM-Solver++ App.; the "sde-dpmsolver++" of their code), midpoint form
    (see `_dpmpp_2m`). Its first-order form is exactly the ancestral step: a second-order ancestral sampler."""
    return _dpmpp_2m(denoiser, x, log_snrs, True, generators, callback)


def get_sampler(name: str):
    table = {"ancestral": sample_ancestral, "ddim": sample_ddim, "dpmpp": sample_dpmpp_2m,
             "dpmpp_sde": sample_dpmpp_2m_sde}
    if name not in table:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {name!r}")
    return table[name]


# ---- denoiser wrappers -------------------------------------------------------------------------------------

def dynamic_threshold(denoiser: Denoiser, percentile: float = 0.995) -> Denoiser:
    """Dynamic thresholding (Imagen Sec. 2.3): s = max(1, quantile_p(|x0|)) per sample, x0 <- clip(x0, -s, s) / s.
    Samples already within [-1, 1] are left untouched."""
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile}")

    def wrapped(x, log_snr_):
        x0 = denoiser(x, log_snr_)
        s = torch.quantile(x0.abs().flatten(1).float(), percentile, dim=1).clamp(min=1.0).to(x0.dtype)
        s = s.view(-1, 1, 1, 1)
        return x0.clamp(-s, s) / s

    return wrapped


def static_threshold(denoiser: Denoiser) -> Denoiser:
    """Static clipping of x0 to [-1, 1] (Imagen Sec. 2.3)."""
    return lambda x, log_snr_: denoiser(x, log_snr_).clamp(-1.0, 1.0)


def classifier_free_guidance(model: Callable, cond: dict, uncond: dict, guidance_scale: float) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022): x0 = x0_uncond + w (x0_cond - x0_uncond), on x0 (equivalent to
    guiding eps for a fixed x_t). `model(x, log_snr, **kwargs) -> x0`; cond and uncond run as ONE batched forward.
    `uncond` is the null text or a negative prompt. w = 1 is the conditional prediction alone."""
    if guidance_scale == 1.0:
        return lambda x, log_snr_: model(x, log_snr_, **cond)
    both = {k: _cat(cond[k], uncond[k]) for k in cond}

    def wrapped(x, log_snr_):
        x0_c, x0_u = model(torch.cat([x, x]), torch.cat([log_snr_, log_snr_]), **both).chunk(2)
        return x0_u + guidance_scale * (x0_c - x0_u)

    return wrapped


def _cat(a, b):
    """Concatenate conditioning along the batch; text tokens of different lengths are zero-padded (masked)."""
    if not isinstance(a, torch.Tensor):
        return a
    if a.ndim >= 2 and a.shape[1:] != b.shape[1:] and a.ndim in (2, 3) and a.shape[0] == b.shape[0]:
        length = max(a.shape[1], b.shape[1])
        a, b = (torch.nn.functional.pad(t, (0, 0) * (t.ndim - 2) + (0, length - t.shape[1])) for t in (a, b))
    return torch.cat([a, b])


def inpaint(denoiser: Denoiser, known: torch.Tensor, mask: torch.Tensor) -> Denoiser:
    """Inpainting by replacement on x0: where mask == 0 the estimate is the known image, so every sampler step moves
    x toward it; where mask == 1 the model fills in (mask [B,1,H,W] in [0, 1], 1 = regenerate)."""
    return lambda x, log_snr_: mask * denoiser(x, log_snr_) + (1 - mask) * known
