"""The bundled cascade end to end: seconds per 128x128 image per sampler and step count, and runtime peak memory.

    .venv/bin/python bench/end_to_end.py                          # the bundled model (imagen_addon/weights/default)
    .venv/bin/python bench/end_to_end.py --model /tmp/bundled_snapshot --cases dpmpp:20 dpmpp:10 default --reps 3
    .venv/bin/python bench/end_to_end.py --cases ancestral:250 --reps 1 --no-rss
    .venv/bin/python bench/end_to_end.py --cases dpmpp:20:g5,5 --reps 3 --no-rss   # guidance on the SR stage too

Every timed image is `Imagen.generate(prompt, seed=...)` with a prompt not seen before (so text encoding is
included, not served from the embedding cache), with `generate`'s defaults otherwise (guidance 5 on the base stage,
the SR stage unguided, dynamic thresholding): what the add-on does per image. The model and text encoder are loaded once before timing (load time reported apart).
Besides wall time, the process's CPU time per image is reported: on a machine shared with other jobs, CPU seconds /
threads is a second estimate of the quiet-machine wall time (an overestimate: OpenMP threads spin while a partner
thread is descheduled). Peak memory: a fresh process loads the model and generates one image with the defaults;
its `ru_maxrss` is reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import log, machine_line, markdown_table, setup_torch, stats, write_json  # noqa: E402

DEFAULT_CASES = ["ancestral:250", "ddim:50", "dpmpp:20", "dpmpp:10", "default"]
PROMPTS = ["a snowy mountain range under a pale blue sky", "a sandy desert with red rocks at sunset",
           "a green meadow with scattered oak trees", "a calm lake surrounded by pine forest",
           "rolling hills of purple heather in fog", "a volcanic island in a dark sea",
           "a wheat field under storm clouds", "a frozen tundra with a low orange sun",
           "a canyon of layered sandstone at noon", "a misty jungle valley with a river"]


def resolve_model(path: str | None) -> str:
    from imagen_addon.core.imagen import default_model_dir  # noqa: PLC0415

    model = Path(path) if path else default_model_dir()
    if not (model / "imagen.json").exists():
        raise SystemExit(f"no model at {model}: the bundled model is not there yet; export a snapshot of the "
                         "training run with `imagen export runs/bundled /tmp/bundled_snapshot` and pass "
                         "--model /tmp/bundled_snapshot")
    return str(model)


def parse_case(case: str) -> tuple[str, dict]:
    """'default', 'sampler:steps' or 'sampler:steps:g5,1' (guidance scale per stage; default: 5 on the base only)."""
    if case == "default":
        return "default (dpmpp, 20 steps)", {}
    sampler, steps, *rest = case.split(":")
    name, kwargs = f"{sampler}, {steps} steps", {"sampler": sampler, "steps": int(steps)}
    if rest and rest[0].startswith("g"):
        scales = [float(v) for v in rest[0][1:].split(",")]
        kwargs["guidance_scale"] = scales[0] if len(scales) == 1 else scales
        name += f", guidance {'/'.join(f'{v:g}' for v in scales)}"
    return name, kwargs


def cpu_seconds() -> float:
    """CPU time of this process (all threads): what an image costs, less sensitive than wall time to other load."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_rss(model: str, threads: int, steps: int | None = None) -> None:
    """Runs in a fresh process: load, generate one image with the defaults, report peak RSS."""
    setup_torch(threads, "cpu")
    t0 = time.perf_counter()
    from imagen_addon.core.imagen import Imagen  # noqa: PLC0415

    imagen = Imagen.from_pretrained(model)
    imagen.encode(["warm up"])
    load = time.perf_counter() - t0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t1 = time.perf_counter()
    imagen.generate(PROMPTS[0], seed=0, **({"steps": steps} if steps else {}))
    first = time.perf_counter() - t1
    print(json.dumps({"load_s": load, "first_image_s": first, "peak_rss_after_load_mb": rss_loaded,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (default: the bundled model)")
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="sampler:steps or 'default'")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocess")
    ap.add_argument("--child-rss", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-steps", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    model = resolve_model(args.model)
    if args.child_rss:
        child_rss(model, args.threads, args.child_steps)
        return {}

    mem = None
    if not args.no_rss:  # first, while this process holds nothing
        out = subprocess.run([sys.executable, __file__, "--child-rss", "--model", model, "--threads",
                              str(args.threads)], capture_output=True, text=True, check=True)
        mem = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"fresh process: load {mem['load_s']:.1f} s, first image {mem['first_image_s']:.1f} s, "
            f"peak RSS {mem['peak_rss_mb']:.0f} MB")

    setup_torch(args.threads, "cpu")
    from imagen_addon.core.imagen import Imagen  # noqa: PLC0415

    t0 = time.perf_counter()
    imagen = Imagen.from_pretrained(model)
    imagen.encode(["warm up"])
    load = time.perf_counter() - t0
    imagen.generate("warm up", seed=0, steps=2)
    rows, raw, k = [], [], 0
    for case in args.cases:
        name, kwargs = parse_case(case)
        times, cpu = [], []
        for _ in range(args.reps):
            prompt = f"{PROMPTS[k % len(PROMPTS)]} ({k})"
            k += 1
            t, c = time.perf_counter(), cpu_seconds()
            imagen.generate(prompt, seed=k, **kwargs)
            times.append(time.perf_counter() - t)
            cpu.append(cpu_seconds() - c)
        s, c = stats(times), stats(cpu)
        rows.append([name, f"{s['min']:.2f}", f"{s['median']:.2f}", f"{c['min']:.2f}", f"{c['min'] / args.threads:.2f}",
                     str(s["n"])])
        raw.append({"case": name, "times": times, "cpu_seconds": cpu})
        log(" | ".join(rows[-1]))
    size = imagen.config.stages[-1].image_size
    print(f"\n{machine_line(args.threads, 'cpu')}; model {model} ({imagen.model_hash[:12]}), {size}x{size}; "
          f"load + encoder {load:.1f} s\n")
    print(markdown_table(["sampler", "s/image min", "s/image median", "CPU s/image min",
                          f"CPU s / {args.threads} threads", "runs"], rows))
    if mem:
        print(f"\npeak RSS of a fresh process that loads the model and generates one image: "
              f"{mem['peak_rss_mb']:.0f} MB (after loading: {mem['peak_rss_after_load_mb']:.0f} MB)")
    result = {"bench": "end_to_end", "args": vars(args), "machine": machine_line(args.threads, "cpu"),
              "model": model, "model_hash": imagen.model_hash, "load_s": load, "memory": mem, "results": raw}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
