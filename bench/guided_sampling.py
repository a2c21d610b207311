"""One image through a whole base stage with classifier-free guidance, equal steps: ours vs imagen-pytorch 2.1.0.

    .venv/bin/python bench/guided_sampling.py --steps 50 --reps 3
    .venv/bin/python bench/guided_sampling.py --device cuda --dtype bf16 --sizes 64 256

The same matched U-Nets as bench/unet_step.py (random weights: the work per step does not depend on them), the same
precomputed 384-d text embeddings, guidance scale 5 and dynamic thresholding on both sides, ancestral (DDPM)
sampling on both sides by default. Ours: `Imagen._sample_stage`, the code `Imagen.generate` runs per stage, with
cond and uncond in one batched forward; the peer: `Imagen.sample(text_embeds=..., cond_scale=5)`, which runs the
U-Net twice per step (`Unet.forward_with_cond_scale`). Repetitions alternate ours, peer, ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (add_side_by_side_args, autocast, interleave, log, peer_session, ratio_row,  # noqa: E402
                     report, text_inputs, timed)
from unet_step import our_config, peer_spec  # noqa: E402

from imagen_addon.core.imagen import Imagen, ImagenConfig  # noqa: E402
from imagen_addon.core.samplers import SAMPLERS  # noqa: E402
from imagen_addon.core.stage import StageConfig  # noqa: E402


def our_sampler(size: int, steps: int, sampler: str, guidance: float, text_len: int, device: str, dtype: str,
                batch: int = 1, width: int = 48):
    """A callable that samples `batch` images through one base stage, as `Imagen.generate` does, and its model."""
    imagen = Imagen(ImagenConfig(stages=(StageConfig(unet=our_config(size, width)),))).to(device).eval()
    text, mask = text_inputs(batch, text_len, imagen.config.stages[0].unet.text_dim, device)
    null_text, null_mask = torch.zeros_like(text[:, :1]), torch.zeros_like(mask[:, :1])

    def run():
        generators = [torch.Generator().manual_seed(i) for i in range(batch)]
        with torch.inference_mode(), autocast(device, dtype):
            return imagen._sample_stage(
                0, text, mask, null_text, null_mask, (size, size), generators, steps=steps, sampler=sampler,
                guidance_scale=guidance, tiling="none", lowres=None, noise_aug_level=None, init=None, strength=1.0,
                inpaint_mask=None, threshold=0.995, callback=None)

    return run, imagen


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--sampler", default="ancestral", choices=SAMPLERS, help="ours (the peer is always DDPM)")
    ap.add_argument("--guidance", type=float, default=5.0)
    add_side_by_side_args(ap, reps=3)
    args = ap.parse_args(argv)
    rows, raw = [], []
    with peer_session(args) as peer:
        for size in args.sizes:
            run, imagen = our_sampler(size, args.steps, args.sampler, args.guidance, args.text_len, args.device,
                                      args.dtype, width=args.width)
            params = sum(p.numel() for p in imagen.parameters())
            if peer:
                built = peer.call("build", **peer_spec(imagen.config.stages[0].unet, params, args.text_len,
                                                        timesteps=args.steps))
                log(f"{size}px: ours {params / 1e6:.2f} M parameters, peer {built['params'] / 1e6:.2f} M")
            ours_fn = lambda: timed(run, args.device)  # noqa: E731
            peer_fn = (lambda: peer.call("sample", cond_scale=args.guidance)["times"][0]) if peer else None
            interleave(ours_fn, None, 1)  # warm-up of ours; the peer's warm-up is one U-Net forward
            if peer:
                peer.call("forward", batch=1, iters=1)
            o, p = interleave(ours_fn, peer_fn, args.reps)
            name = f"{size}px, {args.steps} steps, guidance {args.guidance:g} ({args.sampler} / ddpm)"
            rows.append(ratio_row(name, o, p))
            raw.append({"case": name, "ours": o, "peer": p})
            log(" | ".join(rows[-1]))
    return report("guided_sampling", args, rows, raw, "seconds per image")


if __name__ == "__main__":
    main()
