"""U-Net training step (loss + backward + AdamW) and inference forward: ours vs imagen-pytorch 2.1.0's `Unet`.

    .venv/bin/python bench/unet_step.py --sizes 32 --batches 16 --reps 5
    .venv/bin/python bench/unet_step.py --device cuda --dtype bf16 --sizes 64 256 --batches 16 32

Both networks: a 7.2 M-parameter base U-Net in the layout of our base stages (three levels, channel multipliers
1, 2, 4, width 48, 1/2/3 residual blocks; masked cross-attention at the two lower resolutions; self-attention at the
lowest, on the way down and up), the peer's base width chosen so that its parameter count is the closest to ours
(reported; within 10 %), 384-d precomputed text embeddings of
length 16 for both. The training step is each library's own loss (ours `Stage.loss`, v-prediction, Min-SNR; the
peer's `Imagen.forward`, v-prediction, Min-SNR), then backward and AdamW. Repetitions alternate ours, peer, ...

Each side runs as its library does. Ours (`--ours trainer`, the default) as `imagen train` and `from_pretrained`
run it: weights in channels_last (so the wide 3x3 convolutions run as Winograd F(4x4, 3x3) in fp32 on CPU,
`core/winograd.py`), the trainer's fused AdamW (`make_optimizer`), denormals flushed to zero (set by the trainer for
the run; the peer runs in its own process, untouched). `--ours plain` is session 1-3's protocol:
NCHW, torch's default AdamW loop, no flush.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (add_side_by_side_args, autocast, conv_peak, count_flops, interleave, log,  # noqa: E402
                     markdown_table, peer_session, ratio_row, report, text_inputs, timed)

from imagen_addon.core.stage import Stage, StageConfig  # noqa: E402
from imagen_addon.core.unet import UNetConfig  # noqa: E402
from imagen_addon.train.trainer import make_optimizer  # noqa: E402


def our_config(size: int, base_channels: int = 48, res_blocks=(1, 2, 3)) -> UNetConfig:
    """Our base-stage U-Net layout at `size` (fixed here, not read from configs/, so that numbers stay comparable
    across recipe changes; it was the first bundled recipe's base stage, 7.2 M parameters)."""
    levels = len(res_blocks)
    res = [size // 2 ** i for i in range(levels)]
    return UNetConfig(image_size=size, base_channels=base_channels, channel_mults=tuple(2 ** i for i in range(levels)),
                      num_res_blocks=tuple(res_blocks), cross_attn_resolutions=tuple(res[-2:]), self_attn=True,
                      head_dim=base_channels, groups=8)


def peer_spec(cfg: UNetConfig, params: int, text_len: int, timesteps: int = 1000) -> dict:
    return {"size": cfg.image_size, "target_params": params, "levels": len(cfg.channel_mults),
            "res_blocks": list(cfg.num_res_blocks), "heads": max(2, cfg.base_channels * 4 // cfg.head_dim),
            "head_dim": cfg.head_dim, "text_len": text_len, "text_dim": cfg.text_dim, "timesteps": timesteps}


class Ours:
    """Our stage and optimizer; by default as the trainer runs them (fused AdamW, channels_last weights)."""

    def __init__(self, cfg: UNetConfig, device: str, dtype: str, fused: bool = True, channels_last: bool = True):
        self.device, self.dtype = device, dtype
        self.stage = Stage(StageConfig(unet=cfg)).to(device)
        if channels_last:
            self.stage.to(memory_format=torch.channels_last)
        if fused:
            self.opt = make_optimizer(self.stage.parameters(), 1e-4, 0.01, device)
        else:  # torch's default AdamW: a per-tensor loop on CPU
            self.opt = torch.optim.AdamW(self.stage.parameters(), 1e-4, weight_decay=0.01)
        self.params = sum(p.numel() for p in self.stage.parameters())

    def _inputs(self, batch: int, text_len: int):
        s = self.stage.cfg.image_size
        g = torch.Generator().manual_seed(1)
        x = (torch.rand(batch, 3, s, s, generator=g) * 2 - 1).to(self.device)
        return (x, *text_inputs(batch, text_len, self.stage.cfg.unet.text_dim, self.device))

    def train(self, batch: int, text_len: int):
        x, text, mask = self._inputs(batch, text_len)

        def step():
            with autocast(self.device, self.dtype):
                loss = self.stage.loss(x, text, mask)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

        self.stage.train()
        return lambda: timed(step, self.device)

    def flops(self, mode: str, batch: int, text_len: int) -> float:
        """FLOPs of one training step's loss + backward (mode "train") or of one forward (mode "forward")."""
        x, text, mask = self._inputs(batch, text_len)
        if mode == "train":
            flops = count_flops(lambda: self.stage.loss(x, text, mask).backward())
            self.opt.zero_grad(set_to_none=True)
            return flops
        with torch.inference_mode():
            return count_flops(lambda: self.stage.unet(x, torch.zeros(batch), text, mask))

    def forward(self, batch: int, text_len: int):
        x, text, mask = self._inputs(batch, text_len)
        log_snr = torch.zeros(batch, device=self.device)

        def fwd():
            with torch.inference_mode(), autocast(self.device, self.dtype):
                self.stage.unet(x, log_snr, text, mask)

        self.stage.eval()
        return lambda: timed(fwd, self.device)


WORK_HEADER = ["case", "ours GFLOP", "peer GFLOP", "ours GFLOP/s", "peer GFLOP/s", "ours % of conv peak",
               "peer % of conv peak"]


def work_row(name: str, ours_flops: float, ours_s: float, peer_flops, peer_s, peak: float) -> list[str]:
    row = [name, f"{ours_flops / 1e9:.1f}", "-", f"{ours_flops / ours_s / 1e9:.0f}", "-",
           f"{100 * ours_flops / ours_s / peak:.0f} %", "-"]
    if peer_flops is not None:
        row[2], row[4] = f"{peer_flops / 1e9:.1f}", f"{peer_flops / peer_s / 1e9:.0f}"
        row[6] = f"{100 * peer_flops / peer_s / peak:.0f} %"
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32])
    ap.add_argument("--batches", type=int, nargs="+", default=[16])
    ap.add_argument("--modes", nargs="+", default=["train", "forward"], choices=["train", "forward"])
    ap.add_argument("--ours", choices=["trainer", "plain"], default="trainer",
                    help="ours as the trainer runs it (channels_last, fused AdamW, flush denormals) or plain")
    add_side_by_side_args(ap, reps=5)
    args = ap.parse_args(argv)
    torch.set_flush_denormal(args.ours == "trainer")  # process-wide, so switched off again at the end
    try:
        return run(args)
    finally:
        torch.set_flush_denormal(False)


def run(args) -> dict:
    rows, work, raw = [], [], []
    with peer_session(args) as peer:
        peak = conv_peak(args.device, dtype=args.dtype)
        log(f"3x3 convolution peak of this machine: {peak / 1e9:.0f} GFLOP/s")
        for size in args.sizes:
            cfg = our_config(size, args.width)
            trainer = args.ours == "trainer"
            ours = Ours(cfg, args.device, args.dtype, fused=trainer, channels_last=trainer)
            built = peer.call("build", **peer_spec(cfg, ours.params, args.text_len)) if peer else None
            if built:
                log(f"{size}px: ours {ours.params / 1e6:.2f} M parameters, peer {built['params'] / 1e6:.2f} M "
                    f"(dim {built['dim']}, {100 * (built['params'] / ours.params - 1):+.1f} %)")
            for batch in args.batches:
                for mode in args.modes:
                    ours_fn = getattr(ours, mode)(batch, args.text_len)
                    peer_fn = (lambda m=mode, b=batch: peer.call(m, batch=b, iters=1)["times"][0]) if peer else None
                    interleave(ours_fn, peer_fn, 1)  # warm-up (allocator, oneDNN primitive caches)
                    o, p = interleave(ours_fn, peer_fn, args.reps)
                    name = f"{mode} {size}px batch {batch}"
                    rows.append(ratio_row(name, o, p))
                    of = ours.flops(mode, batch, args.text_len)
                    pf = peer.call("flops", mode=mode, batch=batch)["flops"] if peer else None
                    work.append(work_row(name, of, min(o), pf, min(p) if p else None, peak))
                    raw.append({"case": name, "ours": o, "peer": p, "ours_params": ours.params,
                                "peer_params": built["params"] if built else None, "ours_flops": of,
                                "peer_flops": pf})
                    log(" | ".join(rows[-1]))
    result = report("unet_step", args, rows, raw, "seconds per step (train) or per forward",
                    conv_peak_flops=peak)
    print(f"\nWork per call (FLOPs counted by torch.utils.flop_counter: matmuls, convolutions, attention) and the "
          f"rate at the fastest repetition; this machine's 3x3 convolution peak: {peak / 1e9:.0f} GFLOP/s\n")
    print(markdown_table(WORK_HEADER, work))
    return result


if __name__ == "__main__":
    main()
