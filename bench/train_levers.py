"""The trainer's two levers on our U-Net training step (loss + backward + AdamW), each on vs off in one process.

    .venv/bin/python bench/train_levers.py --size 32 --batch 16 --reps 6
    .venv/bin/python bench/train_levers.py --size 64 --batch 16 --reps 4

Variants (the base U-Net of `bench/unet_step.py`, denormals flushed as the trainer does): plain = NCHW weights and
torch's default AdamW loop; fused = `make_optimizer` (torch's fused AdamW); channels_last = weights in channels_last;
both = what `imagen train` runs. Repetitions alternate the variants; speed-up = plain min / variant min.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import log, machine_line, markdown_table, setup_torch, stats, write_json  # noqa: E402
from unet_step import our_config  # noqa: E402

from imagen_addon.core.stage import Stage, StageConfig  # noqa: E402
from imagen_addon.train.trainer import make_optimizer  # noqa: E402

VARIANTS = {"plain": (False, False), "fused AdamW": (True, False), "channels_last": (False, True),
            "both (the trainer)": (True, True)}


def make_step(stage: Stage, fused: bool, channels_last: bool, batch: int):
    stage = copy.deepcopy(stage)
    if channels_last:
        stage.to(memory_format=torch.channels_last)
    if fused:
        opt = make_optimizer(stage.parameters(), 1e-4, 0.01, "cpu")
    else:
        opt = torch.optim.AdamW(stage.parameters(), 1e-4, weight_decay=0.01)  # torch's default: a loop on CPU
    s, g = stage.cfg.image_size, torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, s, s, generator=g) * 2 - 1
    text, mask = torch.randn(batch, 16, stage.cfg.unet.text_dim, generator=g), torch.ones(batch, 16, dtype=torch.bool)

    def step() -> float:
        t = time.perf_counter()
        stage.loss(x, text, mask).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    return step


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=48)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    setup_torch(args.threads, "cpu")
    torch.manual_seed(0)
    stage = Stage(StageConfig(unet=our_config(args.size, args.width))).train()
    steps = {name: make_step(stage, *flags, args.batch) for name, flags in VARIANTS.items()}
    torch.set_flush_denormal(True)  # as the trainer; process-wide, so switched off again at the end
    try:
        for step in steps.values():
            step()  # warm-up
        times = {name: [] for name in steps}
        for _ in range(args.reps):
            for name, step in steps.items():
                times[name].append(step())
    finally:
        torch.set_flush_denormal(False)
    base = min(times["plain"])
    rows = [[name, f"{stats(t)['min']:.3f}", f"{stats(t)['median']:.3f}", f"{base / min(t):.2f}x"]
            for name, t in times.items()]
    log(f"{args.size}px batch {args.batch}: done")
    print(f"\n{machine_line(args.threads, 'cpu')}; training step {args.size}px batch {args.batch}, "
          f"{args.reps} reps per variant, alternated; seconds\n")
    print(markdown_table(["variant", "min", "median", "speed-up (min)"], rows))
    result = {"bench": "train_levers", "args": vars(args), "results": times}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
