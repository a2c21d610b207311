"""The trainer's two levers on our U-Net training step (loss + backward + AdamW), each on vs off in one process.

    .venv/bin/python bench/train_levers.py --size 32 --batch 16 --reps 6
    .venv/bin/python bench/train_levers.py --size 64 --batch 16 --reps 4

Variants (the base U-Net of `bench/unet_step.py`, denormals flushed as the trainer does): plain = NCHW weights and
torch's default AdamW loop; fused = `make_optimizer` (torch's fused AdamW); channels_last = weights in channels_last;
both = what `imagen train` runs. Repetitions alternate the variants; speed-up = plain min / variant min.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import log, machine_line, markdown_table, setup_torch, stats, write_json  # noqa: E402
from unet_step import Ours, our_config  # noqa: E402

VARIANTS = {"plain": (False, False), "fused AdamW": (True, False), "channels_last": (False, True),
            "both (the trainer)": (True, True)}


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
    cfg = our_config(args.size, args.width)
    steps = {name: Ours(cfg, "cpu", "fp32", fused=fused, channels_last=cl).train(args.batch, 16)
             for name, (fused, cl) in VARIANTS.items()}
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
