"""Fast paths of our sampling, each measured on vs off in the same run (alternating off, on, off, on, ...).

    .venv/bin/python bench/fast_paths.py --reps 8
    .venv/bin/python bench/fast_paths.py --only padding channels_last --reps 12
    .venv/bin/python bench/fast_paths.py --only compile --reps 5          # slow: compiles first

The networks are the bundled cascade's (configs/bundled.json), randomly initialised: the work per call does not
depend on the weights. A "call" is what one sampler step costs with guidance: one U-Net forward on the cond +
uncond batch (2 images) through `Stage.forward` (x0 estimate), at the stage's native size, base 32 px and SR 128 px.
A fast path is kept in the code only if it wins clearly; `speed-up` = time off / time on.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import ROOT, log, machine_line, markdown_table, setup_torch, stats, write_json  # noqa: E402

from imagen_addon.core import unet as unet_mod  # noqa: E402
from imagen_addon.core import winograd  # noqa: E402
from imagen_addon.core.imagen import Imagen, ImagenConfig  # noqa: E402

PATHS = ("sdpa", "inference_mode", "padding", "channels_last", "upconv", "winograd", "bf16", "batched_guidance",
         "text_cache", "compile")


def bundled_imagen() -> Imagen:
    model = json.loads((ROOT / "configs" / "bundled.json").read_text())["model"]
    return Imagen(ImagenConfig(stages=tuple(model["stages"]), text_encoder=model["text_encoder"],
                               max_text_length=model["max_text_length"])).eval()


def stage_call(imagen: Imagen, k: int, batch: int = 2, seed: int = 0):
    """(stage, kwargs) for one sampler step's forward of stage k at its native size."""
    cfg = imagen.config.stages[k]
    s = cfg.image_size
    g = torch.Generator().manual_seed(seed)
    kwargs = {"x_t": torch.randn(batch, 3, s, s, generator=g), "log_snr_": torch.zeros(batch),
              "text": torch.randn(batch, 12, cfg.unet.text_dim, generator=g),
              "text_mask": torch.ones(batch, 12, dtype=torch.bool)}
    kwargs["text_mask"][batch // 2:] = False  # the uncond half: null text (as classifier-free guidance does)
    if cfg.is_sr:
        kwargs["lowres"] = torch.randn(batch, 3, s, s, generator=g)
        kwargs["aug_log_snr"] = torch.full((batch,), 2.0)
    return imagen.stages[k], kwargs


def manual_attention(q, k, v, attn_mask=None, **_):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(-1) @ v


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def conv_explicit_padding(self, x):
    """The path before the fast path: an F.pad copy of the input, then an unpadded convolution."""
    return F.conv2d(unet_mod.pad(x, self.pad, self.tiling), self.weight, self.bias, self.stride, 0)


def ab(off, on, reps: int) -> tuple[list[float], list[float]]:
    """Alternate off / on; each is a zero-argument callable returning seconds. One warm-up each first."""
    off(), on()
    t_off, t_on = [], []
    for _ in range(reps):
        t_off.append(off())
        t_on.append(on())
    return t_off, t_on


def timer(fn):
    def run():
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    return run


def cases(imagen: Imagen, only: set[str], reps: int):
    """Yields (path, where, t_off, t_on, note)."""
    stages = [(k, f"{'SR' if c.is_sr else 'base'} {c.image_size}px") for k, c in enumerate(imagen.config.stages)]
    infer = torch.inference_mode

    if "sdpa" in only:
        k = 0  # the only stage with attention
        stage, kw = stage_call(imagen, k)

        def fwd():
            with infer():
                stage(**kw)

        def manual():
            with patched(F, "scaled_dot_product_attention", manual_attention), infer():
                stage(**kw)

        yield ("F.scaled_dot_product_attention vs manual softmax(QK^T)V", stages[k][1],
               *ab(timer(manual), timer(fwd), reps), "on = SDPA (current code)")

    for k, where in stages:
        stage, kw = stage_call(imagen, k)

        def fwd_inf(stage=stage, kw=kw):
            with infer():
                stage(**kw)

        def fwd_nograd(stage=stage, kw=kw):
            with torch.no_grad():
                stage(**kw)

        if "inference_mode" in only:
            yield ("torch.inference_mode vs torch.no_grad", where, *ab(timer(fwd_nograd), timer(fwd_inf), reps),
                   "on = inference_mode (current code)")

        if "padding" in only:
            def explicit(fn=fwd_inf):
                with patched(unet_mod.PadConv2d, "forward", conv_explicit_padding):
                    fn()
            yield ("zero padding inside conv2d vs F.pad + conv2d", where, *ab(timer(explicit), timer(fwd_inf), reps),
                   "on = padding inside conv2d (current code); circular tiling keeps F.pad on the wrapped axes")

        # The same call in channels_last, as from_pretrained runs it (a copy: the NCHW cases keep theirs).
        stage_cl = copy.deepcopy(stage).to(memory_format=torch.channels_last)
        kw_cl = {n: (v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v) for n, v in kw.items()}

        def fwd_cl(stage_cl=stage_cl, kw_cl=kw_cl):
            with infer():
                stage_cl(**kw_cl)

        if "channels_last" in only:
            yield ("channels_last vs contiguous (NCHW)", where, *ab(timer(fwd_inf), timer(fwd_cl), reps),
                   "weights and input channels_last")

        if "upconv" in only:
            def plain(fn=fwd_cl):
                with patched(unet_mod.NearestUpConv, "forward", unet_mod.NearestUpConv.reference):
                    fn()
            yield ("upsample + 3x3 conv as one sub-pixel 2x2 conv vs nearest upsample then conv", where,
                   *ab(timer(plain), timer(fwd_cl), reps), "on = sub-pixel (current code); channels_last")

        if "winograd" in only:
            def direct(fn=fwd_cl):
                with patched(winograd, "ENABLED", False):
                    fn()
            yield ("3x3 convs >= 96 channels by Winograd F(4x4, 3x3) vs direct", where,
                   *ab(timer(direct), timer(fwd_cl), reps), "on = Winograd (current code); channels_last")

        if "bf16" in only:
            def bf16(fn=fwd_inf):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    fn()
            yield ("bf16 autocast vs fp32 (CPU)", where, *ab(timer(fwd_inf), timer(bf16), reps), "")

        if "batched_guidance" in only:
            half = {n: (v[:1] if isinstance(v, torch.Tensor) else v) for n, v in kw.items()}
            half_u = {n: (v[1:] if isinstance(v, torch.Tensor) else v) for n, v in kw.items()}

            def two(stage=stage, half=half, half_u=half_u):
                with infer():
                    stage(**half)
                    stage(**half_u)
            yield ("guidance: cond + uncond in one batch vs two forwards", where,
                   *ab(timer(two), timer(fwd_inf), reps), "on = one batched forward (current code)")

        if "compile" in only:
            compiled = torch.compile(stage)

            def comp(compiled=compiled, kw=kw):
                with infer():
                    compiled(**kw)
            t = time.perf_counter()
            comp()
            log(f"torch.compile of {where}: first call {time.perf_counter() - t:.1f} s")
            yield ("torch.compile vs eager", where, *ab(timer(fwd_inf), timer(comp), reps),
                   "compile time not included")

    if "winograd" in only:
        yield from winograd_training(reps)

    if "text_cache" in only:
        from imagen_addon.core.text import load_text_encoder  # noqa: PLC0415

        encoder = load_text_encoder()
        encoder.encode(["warm up"])
        n = [0]

        def uncached():
            n[0] += 1
            encoder.encode([f"a foggy valley with a river, view {n[0]}"])

        def cached():
            encoder.encode(["a foggy valley with a river"])
        yield ("text-embedding cache: repeated prompt vs new prompt", "MiniLM encode",
               *ab(timer(uncached), timer(cached), reps), "")


def winograd_training(reps: int, sizes=(32, 64), batch: int = 16):
    """Winograd on vs off in the training step of bench/unet_step.py's U-Net (as the trainer runs it)."""
    from unet_step import Ours, our_config  # noqa: PLC0415

    torch.set_flush_denormal(True)   # as the trainer runs
    for size in sizes:
        step = Ours(our_config(size), "cpu", "fp32").train(batch, 16)

        def direct(step=step):
            with patched(winograd, "ENABLED", False):
                return step()
        yield ("3x3 convs >= 96 channels by Winograd F(4x4, 3x3) vs direct", f"training step, {size}px batch {batch}",
               *ab(direct, step, reps), "bench/unet_step.py's U-Net, fused AdamW, channels_last")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f}" if seconds >= 0.01 else f"{seconds * 1e3:.2f}"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=PATHS, default=[p for p in PATHS if p != "compile"])
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    setup_torch(args.threads, "cpu")
    torch.manual_seed(0)
    imagen = bundled_imagen()
    rows, raw = [], []
    for name, where, t_off, t_on, note in cases(imagen, set(args.only), args.reps):
        off, on = stats(t_off), stats(t_on)
        rows.append([name, where, ms(off["min"]), ms(off["median"]), ms(on["min"]), ms(on["median"]),
                     f"{off['min'] / on['min']:.2f}x",
                     f"{off['median'] / on['median']:.2f}x", note])
        raw.append({"path": name, "where": where, "off": t_off, "on": t_on})
        log(" | ".join(rows[-1]))
    print(f"\n{machine_line(args.threads, 'cpu')}; {args.reps} reps each, alternating off/on; milliseconds per call\n")
    print(markdown_table(["fast path", "where", "off min", "off median", "on min", "on median", "speed-up (min)",
                          "speed-up (median)", "note"], rows))
    result = {"bench": "fast_paths", "args": vars(args), "machine": machine_line(args.threads, "cpu"), "results": raw}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
