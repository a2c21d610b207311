"""Efficient U-Net (Imagen, Saharia et al. 2022, Appendix F, Figs. A.28-A.30).

The network knows nothing of noise schedules: it maps (x_t, log_snr, text tokens [, low-res image, aug log_snr])
to the raw model output (eps or v); `core/diffusion.py` turns that into a denoiser.

Efficient U-Net changes kept here: per-level channel multipliers and residual-block counts (more blocks at low
resolution, where they are cheap); the U-Net skip connections scaled by 1/sqrt(2); downsampling *before* the
convolutions of a DBlock and upsampling *after* those of a UBlock. Global conditioning is the noise-level
embedding plus the pooled text embedding (FiLM in every residual block); text tokens enter by masked
cross-attention at the configured resolutions; self-attention runs at the lowest resolution.

Padding is switchable per call (`tiling`): "none" (zeros), "x" (circular left-right: 360 degree panoramas) or
"xy" (circular on both axes: seamless textures).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .winograd import tile_size, winograd_conv2d

TILINGS = ("none", "x", "xy")


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 32              # training resolution; used to name attention resolutions
    channels: int = 3                 # image channels in and out
    lowres_channels: int = 0          # > 0 for super-resolution stages (upsampled low-res image, concatenated)
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: tuple[int, ...] = (1, 2, 3)
    cross_attn_resolutions: tuple[int, ...] = (8,)  # resolutions with masked cross-attention to text tokens
    self_attn: bool = True            # self-attention at the lowest resolution
    head_dim: int = 32
    text_dim: int = 384
    dropout: float = 0.0
    groups: int = 8
    emb_dim: int = field(default=0)   # 0 = 4 * base_channels

    def __post_init__(self):
        for name in ("channel_mults", "num_res_blocks", "cross_attn_resolutions"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        levels = len(self.channel_mults)
        if levels < 1 or len(self.num_res_blocks) != levels:
            raise ValueError(f"channel_mults and num_res_blocks need one entry per level, got "
                             f"{self.channel_mults} and {self.num_res_blocks}")
        if any(n < 1 for n in self.num_res_blocks) or any(m < 1 for m in self.channel_mults):
            raise ValueError("every level needs at least one residual block and a multiplier >= 1")
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**{levels - 1}")
        valid = self.resolutions
        bad = [r for r in self.cross_attn_resolutions if r not in valid]
        if bad:
            raise ValueError(f"cross_attn_resolutions {bad} do not exist; this U-Net has resolutions {valid}")
        for c in self.channel_mults:
            if (self.base_channels * c) % self.groups or (self.base_channels * c) % self.head_dim:
                raise ValueError(f"channels {self.base_channels * c} must be divisible by groups {self.groups} "
                                 f"and head_dim {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.emb_dim == 0:
            object.__setattr__(self, "emb_dim", 4 * self.base_channels)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(self.image_size // 2 ** i for i in range(len(self.channel_mults)))

    def to_dict(self) -> dict:
        return asdict(self)


class PadConv2d(nn.Conv2d):
    """A 'same' convolution whose padding (zeros / circular on x / circular on x and y) is chosen per call.

    Zero padding is done inside the convolution (no padded copy of the input; bench/fast_paths.py measures it);
    circular padding is an explicit F.pad on the wrapped axes only."""

    def __init__(self, cin, cout, kernel_size=3, stride=1):
        super().__init__(cin, cout, kernel_size, stride=stride, padding=0)
        self.pad = kernel_size // 2
        self.tiling = "none"

    def forward(self, x):
        return padded_conv2d(x, self.weight, self.bias, self.stride, self.pad, self.tiling)


def pad(x, p: int, tiling: str):
    """x with p pixels of padding on every side, as `padded_conv2d` pads: circular on the wrapped axes, zeros on
    the others (a copy; the direct convolution pads zeros inside conv2d instead)."""
    if tiling == "xy":
        return F.pad(x, (p, p, p, p), mode="circular")
    if tiling == "x":
        return F.pad(F.pad(x, (p, p, 0, 0), mode="circular"), (0, 0, p, p))
    return F.pad(x, (p, p, p, p))


def padded_conv2d(x, weight, bias, stride, p: int, tiling: str):
    """conv2d with p pixels of padding on every side: zeros, or circular on the wrapped axes ("x": left-right,
    "xy": both) and zeros on the others. Wide 3x3 convolutions in fp32 on CPU run as Winograd F(m x m, 3x3) on the
    padded input (`winograd.tile_size` decides; 1.05x-1.19x per training step, BENCHMARKS.md session 8)."""
    m = tile_size(x, weight, stride) if p == 1 else 0
    if m:   # Winograd F(m x m, 3x3) runs unpadded, on an explicitly padded input (winograd.py)
        return winograd_conv2d(pad(x, p, tiling), weight, bias, m)
    if not p or tiling == "none":
        return F.conv2d(x, weight, bias, stride, p)
    if tiling == "x":
        return F.conv2d(F.pad(x, (p, p, 0, 0), mode="circular"), weight, bias, stride, (p, 0))
    return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), weight, bias, stride, 0)


class NearestUpConv(nn.Sequential):
    """Nearest-neighbour 2x upsampling followed by a 3x3 'same' convolution, computed without the upsampled copy.

    Every output pixel (2i+a, 2j+b) of conv(upsample(x)) sees only 2x2 distinct input pixels, so the pair equals one
    2x2 convolution at the low resolution with 4x the output channels, one group per phase (a, b), whose kernels
    sum the 3x3 taps that land on the same input pixel (sub-pixel convolution: Shi et al. 2016; the equivalence with
    resize-convolution: Aitken et al. 2017). That is 4 multiply-adds per output pixel and channel pair instead of 9
    (over one extra low-res row and column). The children and so the parameters and checkpoints are those of the
    plain pair; `reference` runs it."""

    # _TAPS[a, k, t]: 3x3 kernel row (or column) t feeds low-res offset k of phase a; offsets are (-1, 0) for
    # phase 0 and (0, +1) for phase 1, which is why the 2x2 convolution is padded by 1 and phase a starts at a.
    # _SUMS[(t_row, t_col), (a, k, b, l)] = _TAPS[a, k, t_row] * _TAPS[b, l, t_col]: 3x3 taps to phase kernels.
    _TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    _SUMS = torch.einsum("aks,blt->stakbl", _TAPS, _TAPS).reshape(9, 16)

    def __init__(self, cin, cout):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), PadConv2d(cin, cout))

    def reference(self, x):
        return super().forward(x)

    def phase_weight(self, channels_last: bool) -> torch.Tensor:
        """[4 * cout, cin, 2, 2] kernels, output channel 4 * o + 2 * a + b for channel o of phase (a, b), in the
        memory layout of the input (a mismatch costs oneDNN a weight reorder per call)."""
        w = self[1].weight
        cout, cin = w.shape[:2]
        sums = self._SUMS.to(w.device, w.dtype)
        phases = (w.reshape(cout * cin, 9) @ sums).view(cout, cin, 2, 2, 2, 2)   # o, i, a, k, b, l
        if channels_last:
            return phases.permute(0, 2, 4, 3, 5, 1).reshape(4 * cout, 2, 2, cin).permute(0, 3, 1, 2)
        return phases.permute(0, 2, 4, 1, 3, 5).reshape(4 * cout, cin, 2, 2)

    def forward(self, x):
        conv = self[1]
        b, _, h, w = x.shape
        cout = conv.out_channels
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        weight = self.phase_weight(channels_last)
        y = padded_conv2d(x, weight, conv.bias.repeat_interleave(4), 1, 1, conv.tiling)  # as the 3x3 conv pads
        y = y.unflatten(1, (cout, 2, 2))                                       # [B, C, a, b, h+1, w+1]
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        out = torch.empty(b, cout, 2 * h, 2 * w, dtype=y.dtype, device=y.device, memory_format=fmt)
        for a in (0, 1):
            for c in (0, 1):
                out[:, :, a::2, c::2] = y[:, :, a, c, a:a + h, c:c + w]
        return out


def fourier_embedding(log_snr: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the (continuous) noise level, as for the timestep of DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=log_snr.device) / half)
    angles = (log_snr.float()[:, None] * 25.0) * freqs[None]  # log_snr spans ~[-20, 20]: scale like t*1000/40
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, FiLM (scale, shift) from the global conditioning between them."""

    def __init__(self, cin, cout, emb_dim, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = PadConv2d(cin, cout)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = PadConv2d(cout, cout)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class Attention(nn.Module):
    """Pre-norm multi-head attention over the pixels; keys come from the pixels themselves (self) or from the
    text tokens (cross, masked). Uses `F.scaled_dot_product_attention`."""

    def __init__(self, channels, head_dim, groups, context_dim=None):
        super().__init__()
        self.heads = channels // head_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        kv_dim = context_dim or channels
        self.context_norm = nn.LayerNorm(kv_dim) if context_dim else None
        self.to_kv = nn.Linear(kv_dim, 2 * channels, bias=False)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, context=None, mask=None):
        b, c, h, w = x.shape
        q_in = self.norm(x).flatten(2).transpose(1, 2)                         # [B, HW, C]
        kv_in = q_in if self.context_norm is None else self.context_norm(context)
        q = self.to_q(q_in)
        k, v = self.to_kv(kv_in).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.out(out.transpose(1, 2).flatten(2))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Level(nn.Module):
    """Residual blocks of one resolution, followed by the attention configured for it."""

    def __init__(self, cin, cout, n_blocks, cfg: UNetConfig, cross_attn: bool, self_attn: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(cin if i == 0 else cout, cout, cfg.emb_dim, cfg.groups, cfg.dropout) for i in range(n_blocks))
        self.self_attn = Attention(cout, cfg.head_dim, cfg.groups) if self_attn else None
        self.cross_attn = Attention(cout, cfg.head_dim, cfg.groups, context_dim=cfg.emb_dim) if cross_attn else None

    def forward(self, x, emb, context, mask):
        for block in self.blocks:
            x = block(x, emb)
        if self.self_attn is not None:
            x = self.self_attn(x)
        if self.cross_attn is not None:
            x = self.cross_attn(x, context, mask)
        return x


class EfficientUNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        chans = [cfg.base_channels * m for m in cfg.channel_mults]
        e = cfg.emb_dim
        self.noise_mlp = nn.Sequential(nn.Linear(cfg.base_channels, e), nn.SiLU(), nn.Linear(e, e))
        self.aug_mlp = (nn.Sequential(nn.Linear(cfg.base_channels, e), nn.SiLU(), nn.Linear(e, e))
                        if cfg.lowres_channels else None)
        self.text_proj = nn.Linear(cfg.text_dim, e)
        self.null_token = nn.Parameter(torch.randn(1, 1, e) * 0.02)  # always attendable: no empty key set
        self.text_pool = nn.Sequential(nn.LayerNorm(e), nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.stem = PadConv2d(cfg.channels + cfg.lowres_channels, chans[0])
        lowest = len(chans) - 1
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, c in enumerate(chans):
            # DBlock: downsample first (Efficient U-Net), then the convolutions of this level.
            self.downsample.append(PadConv2d(chans[i - 1], c, 3, stride=2) if i > 0 else nn.Identity())
            res = cfg.resolutions[i]
            self.down.append(Level(c, c, cfg.num_res_blocks[i], cfg, res in cfg.cross_attn_resolutions,
                                   cfg.self_attn and i == lowest))
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(chans))):
            c = chans[i]
            res = cfg.resolutions[i]
            # UBlock: convolutions over [h, skip / sqrt(2)], then upsample after them.
            self.up.append(Level(2 * c, c, cfg.num_res_blocks[i], cfg, res in cfg.cross_attn_resolutions,
                                 cfg.self_attn and i == lowest))
            self.upsample.append(NearestUpConv(c, chans[i - 1]) if i > 0 else nn.Identity())
        self.out = nn.Sequential(nn.GroupNorm(cfg.groups, chans[0]), nn.SiLU(), PadConv2d(chans[0], cfg.channels))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self._convs = [m for m in self.modules() if isinstance(m, PadConv2d)]

    def forward(self, x, log_snr, text, text_mask, lowres=None, aug_log_snr=None, tiling: str = "none"):
        """x [B,C,H,W], log_snr [B], text [B,L,D], text_mask [B,L] bool (all False = no text, for CFG),
        lowres [B,C,H,W] already upsampled (SR stages), aug_log_snr [B] its noise-augmentation level."""
        if tiling not in TILINGS:
            raise ValueError(f"tiling must be one of {TILINGS}, got {tiling!r}")
        for conv in self._convs:
            conv.tiling = tiling
        cfg = self.cfg
        emb = self.noise_mlp(fourier_embedding(log_snr, cfg.base_channels))
        if cfg.lowres_channels:
            if lowres is None or aug_log_snr is None:
                raise ValueError("a super-resolution U-Net needs `lowres` and `aug_log_snr`")
            emb = emb + self.aug_mlp(fourier_embedding(aug_log_snr, cfg.base_channels))
            x = torch.cat([x, lowres], dim=1)
        tokens = self.text_proj(text)
        context = torch.cat([self.null_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        mask = torch.cat([text_mask.new_ones(x.shape[0], 1), text_mask], dim=1)
        weights = mask.unsqueeze(-1).to(context.dtype)
        pooled = (context * weights).sum(1) / weights.sum(1)
        emb = F.silu(emb + self.text_pool(pooled))

        h = self.stem(x)
        skips = []
        for downsample, level in zip(self.downsample, self.down):
            h = level(downsample(h), emb, context, mask)
            skips.append(h)
        for level, upsample in zip(self.up, self.upsample):
            h = level(torch.cat([h, skips.pop() * 2 ** -0.5], dim=1), emb, context, mask)
            h = upsample(h)
        return self.out(h)
