"""`imagen eval`: prompt following on held-out procedural prompts, Fréchet distance, seam errors and speed.

    imagen eval --out eval_out [--model DIR] [--count 64,32] [--settings ancestral:250,ddim:50,dpmpp:20,dpmpp:10]
                [--sr-steps 10] [--write-benchmarks BENCHMARKS.md]

Prompts are attribute combinations the bundled model never saw (`data/heldout.py`) in the spec's vocabulary,
fixed by --seed. A setting (sampler, steps) drives the base stage, where prompt following is decided; the SR
stages run DPM-Solver++ with --sr-steps in every setting. Landscapes are square, materials tiled "xy". `judge.py`
scores each asked attribute; the Fréchet distance compares world-net features of generated images and of
procedural renders of the same records; seam errors set tiled generations against untiled ones.
Writes results.json, table.md, grid.png (prompts x seeds) and accuracy_vs_steps.png to --out; the table,
the pictures and the BENCHMARKS.md section are drawn by `report.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.heldout import is_held_out
from ..data.vocab import caption, sample_attributes
from . import judge as J
from .report import END, START, draw_grid, plot_accuracy, table_markdown, write_benchmarks  # noqa: F401 (re-exported)

DEFAULT_SETTINGS = "ancestral:250,ddim:50,dpmpp:20,dpmpp:10"
SAMPLER_NAMES = {"ancestral": "Ancestral", "ddim": "DDIM", "dpmpp": "DPM-Solver++", "dpmpp_sde": "SDE-DPM-Solver++"}
ATTRIBUTES = J.LANDSCAPE_ATTRIBUTES + J.MATERIAL_ATTRIBUTES


@dataclass(frozen=True)
class Setting:
    sampler: str
    steps: int

    @property
    def label(self) -> str:
        return f"{SAMPLER_NAMES[self.sampler]} {self.steps}"


def parse_settings(text: str) -> list[Setting]:
    """'ancestral:250,ddim:50,dpmpp:20' -> settings, with readable errors."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, steps = item.partition(":")
        if name not in SAMPLER_NAMES or not steps.isdigit() or int(steps) < 1:
            raise ValueError(f"setting {item!r} must look like SAMPLER:STEPS with SAMPLER in "
                             f"{', '.join(SAMPLER_NAMES)} and STEPS >= 1")
        out.append(Setting(name, int(steps)))
    if not out:
        raise ValueError("no settings given")
    return out


def heldout_records(kind: str, count: int, seed: int) -> list[tuple[dict, str]]:
    """`count` distinct held-out attribute records of `kind` with a caption each, determined by `seed`.
    Landscapes whose object would be the colour of its ground are left out (see `judge.object_visible`)."""
    rng = np.random.default_rng([seed, 0 if kind == "landscape" else 1])
    out, seen = [], set()
    for _ in range(50 * count + 100):
        if len(out) == count:
            break
        attrs = sample_attributes(rng, kind, lambda a: not is_held_out(a) or not J.object_visible(a))
        key = json.dumps(attrs, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((attrs, caption(attrs, rng)))
    return out


def reference_images(records: list[dict], size: int, seed: int) -> list[np.ndarray]:
    """Procedural renders of the records (the 'real' images the judge and the Fréchet distance compare with)."""
    from ..data.worlds import render  # noqa: PLC0415

    return [render(a, size, np.random.default_rng([seed, 7, i])) for i, a in enumerate(records)]


def generate(imagen, texts: list[str], seeds: list[int], setting: Setting, *, sr_steps: int, guidance: float,
             size: tuple[int, int] | None = None, tiling: str = "none", batch: int = 16) -> tuple[list, float, list]:
    """Images for `texts` (image i from seeds[i]), the wall seconds they took and the base stage's low-resolution
    images. The base stage runs `setting`
    in batches of `batch` prompts; the SR stages run DPM-Solver++ for `sr_steps`, one image per call (the
    public API takes one low-resolution image per call)."""
    common = {"guidance_scale": guidance, "size": size, "tiling": tiling}
    sr = range(1, len(imagen.stages))
    images, bases, t0 = [], [], time.perf_counter()
    for start in range(0, len(texts), batch):
        chunk, chunk_seeds = texts[start:start + batch], seeds[start:start + batch]
        lows = imagen.generate(chunk, seed=chunk_seeds, steps=setting.steps, sampler=setting.sampler,
                               stages=range(1), **common)
        bases += lows
        if not len(sr):
            images += lows
            continue
        for text, s, low in zip(chunk, chunk_seeds, lows):
            images += imagen.generate(text, seed=s, steps=sr_steps, sampler="dpmpp", stages=sr, lowres_image=low,
                                      **common)
    return images, time.perf_counter() - t0, bases


def accuracy(verdicts: list[dict[str, bool]]) -> dict[str, float]:
    """Per-attribute share of True over the verdicts that contain it."""
    out = {}
    for key in ATTRIBUTES:
        values = [v[key] for v in verdicts if key in v]
        if values:
            out[key] = round(float(np.mean(values)), 4)
    return out


def checks(verdicts: list[dict[str, bool]]) -> dict[str, int]:
    """How many verdicts score each attribute (the n behind each share of `accuracy`)."""
    return {k: n for k in ATTRIBUTES if (n := sum(1 for v in verdicts if k in v))}


def mean_standard_error(acc: dict[str, float], n: dict[str, int], keys=ATTRIBUTES) -> float | None:
    """Standard error of `mean_of` (the unweighted mean over attributes): sqrt(sum_k p_k (1 - p_k) / n_k) / K, with
    p_k shrunk to (x + 1) / (n + 2) so that a 0 % or 100 % share of a handful of images still counts as uncertain."""
    ks = [k for k in keys if k in acc]
    if not ks:
        return None
    var = 0.0
    for k in ks:
        p = (acc[k] * n[k] + 1) / (n[k] + 2)
        var += p * (1 - p) / n[k]
    return round(float(np.sqrt(var) / len(ks)), 4)


def mean_of(acc: dict[str, float], keys=ATTRIBUTES) -> float | None:
    values = [acc[k] for k in keys if k in acc]
    return round(float(np.mean(values)), 4) if values else None


def pooled_seam(images: list, axis: int, period: int = 1) -> float | None:
    return round(J.seam_ratio(images, axis, period), 3) if images else None


def material_seams(images: list, period: int) -> dict:
    """Seam ratios of tiled materials, left-right (x) and top-bottom (y): against every interior neighbour pair, and
    against the pairs at the wrap's phase of the cascade's `period`-pixel grid only."""
    return {"material_x": pooled_seam(images, 1), "material_y": pooled_seam(images, 0),
            "material_x_same_phase": pooled_seam(images, 1, period),
            "material_y_same_phase": pooled_seam(images, 0, period)}


def fd_block(feats: np.ndarray, ref: np.ndarray, kinds: list[str]) -> dict[str, float | None]:
    """Fréchet distances of all images and of each kind (None with fewer than two images)."""
    from .classifier import frechet_distance  # noqa: PLC0415

    groups = {"all": kinds, "landscape": ["landscape"], "material": ["material"]}
    idx = {name: [i for i, k in enumerate(kinds) if k in keep] for name, keep in groups.items()}
    return {name: round(frechet_distance(feats[i], ref[i]), 3) if len(i) >= 2 else None for name, i in idx.items()}


# ---------------------------------------------------------------- the run


def run(args) -> dict:
    import torch  # noqa: PLC0415

    from ..core.imagen import Imagen  # noqa: PLC0415
    from .classifier import load_nets  # noqa: PLC0415

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = parse_settings(args.settings)
    n_land, n_mat = args.count
    imagen = Imagen.from_pretrained(args.model, device=args.device)
    final = imagen.config.stages[-1].image_size
    nets = load_nets(Path(args.judge_weights)) if args.judge_weights else load_nets()
    land = heldout_records("landscape", n_land, args.seed)
    mats = heldout_records("material", n_mat, args.seed)
    records, texts = [a for a, _ in land + mats], [t for _, t in land + mats]
    kinds = [a["kind"] for a in records]
    seeds = [args.seed * 100_000 + i for i in range(len(records))]
    say(f"eval: {len(land)} landscape + {len(mats)} material held-out prompts, {len(settings)} settings")

    real = reference_images(records, final, args.seed)
    real_verdicts, real_feats = J.judge_batch(real, records, nets)
    real_acc = accuracy(real_verdicts)
    results = {
        "model": str(args.model or "bundled"), "model_hash": imagen.model_hash, "seed": args.seed,
        "prompts": [{"text": t, "attributes": a} for t, a in zip(texts, records)],
        "counts": {"landscape": len(land), "material": len(mats)}, "guidance_scale": args.guidance,
        "sr": {"sampler": "dpmpp", "steps": args.sr_steps, "note": "every setting's SR stages use this"},
        "judge": {"method": "measured colours / positions / presence; CNN pattern, orientation, shape",
                  "real_accuracy": real_acc, "real_mean_accuracy": mean_of(real_acc),
                  "nets": nets.meta.get("heldout_accuracy")},
        "checks": checks(real_verdicts),  # which attributes a verdict holds depends on the prompt, not the image
        "settings": []}
    say(f"eval: judge on procedural images of these prompts: mean {mean_of(real_acc)}")

    gen = {"sr_steps": args.sr_steps, "guidance": args.guidance, "batch": args.batch}
    nl, tiled = len(land), {}
    period = imagen.size_multiple  # the cascade's shift symmetry under circular padding (see seam_ratio)
    results["seam_period"] = period
    for setting in settings:
        say(f"eval: {setting.label} ...")
        land_images, t_land, land_bases = generate(imagen, texts[:nl], seeds[:nl], setting, tiling="none", **gen)
        mat_images, t_mat, mat_bases = generate(imagen, texts[nl:], seeds[nl:], setting, tiling="xy", **gen)
        images, tiled[setting] = land_images + mat_images, mat_images
        verdicts, feats = J.judge_batch(images, records, nets)
        acc = accuracy(verdicts)
        row = {"sampler": setting.sampler, "steps": setting.steps, "label": setting.label, "accuracy": acc,
               "base_accuracy": accuracy(J.judge_batch(land_bases + mat_bases, records, nets)[0]),
               "mean_accuracy": mean_of(acc), "mean_accuracy_se": mean_standard_error(acc, results["checks"]),
               "landscape_accuracy": mean_of(acc, J.LANDSCAPE_ATTRIBUTES),
               "material_accuracy": mean_of(acc, J.MATERIAL_ATTRIBUTES), "fd": fd_block(feats, real_feats, kinds),
               "seam": material_seams(mat_images, period),
               "seconds_per_image": round((t_land + t_mat) / len(records), 3)}
        row["base_mean_accuracy"] = mean_of(row["base_accuracy"])
        results["settings"].append(row)
        say(f"eval: {setting.label}: mean accuracy {row['mean_accuracy']}, FD {row['fd']['all']}, "
            f"{row['seconds_per_image']} s/image")

    every = [image for images in tiled.values() for image in images]
    results["seam_all_settings"] = dict(material_seams(every, period), count=len(every))
    extra = settings[-1] if args.extras_setting is None else parse_settings(args.extras_setting)[0]
    results["seams"] = seam_section(imagen, args, extra, land, mats, seeds, final, gen, say, tiled.get(extra))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_mat = min(len(mats), max(args.grid_rows * 3 // 8, args.grid_rows - len(land)))  # ~5 landscapes : 3 materials
    grid_rows = land[: args.grid_rows - n_mat] + mats[:n_mat]
    if grid_rows and args.grid_seeds > 0:
        say(f"eval: grid ({len(grid_rows)} prompts x {args.grid_seeds} seeds, {extra.label}) ...")
        draw_grid(imagen, grid_rows, args, extra).save(out / "grid.png")
        results["grid"] = {"file": "grid.png", "setting": extra.label, "seeds": args.grid_seeds}
    return results


def seam_section(imagen, args, setting: Setting, land, mats, seeds, final: int, gen: dict, say,
                 tiled: list | None = None) -> dict:
    """Seam ratios (target <= 1.5) of 2:1 panoramas (tiling x) and tiled materials (`tiled`, if that setting's
    were made already), with untiled generations of the same prompts as a control and procedural renders as a
    reference."""
    n = min(args.panoramas, len(land))
    period = imagen.size_multiple
    out = {"setting": setting.label, "target": J.SEAM_LIMIT, "period": period}
    if n:
        say(f"eval: {n} panoramas ({2 * final}x{final}, tiling x and untiled control) ...")
        texts = [t for _, t in land[:n]]
        pano = generate(imagen, texts, seeds[:n], setting, size=(2 * final, final), tiling="x", **gen)[0]
        plain = generate(imagen, texts, seeds[:n], setting, size=(2 * final, final), tiling="none", **gen)[0]
        ref = reference_images([dict(a, panorama=True) for a, _ in land[:n]], final, args.seed)
        out["panorama"] = {"tiled": pooled_seam(pano, 1), "untiled_control": pooled_seam(plain, 1),
                           "procedural": pooled_seam(ref, 1), "count": n,
                           "tiled_same_phase": pooled_seam(pano, 1, period)}
    m = min(args.panoramas, len(mats))
    if m:
        say(f"eval: {m} materials, tiled and untiled (control) ...")
        texts = [t for _, t in mats[:m]]
        mat_seeds = seeds[len(land):len(land) + m]
        tiled = tiled[:m] if tiled else generate(imagen, texts, mat_seeds, setting, tiling="xy", **gen)[0]
        plain = generate(imagen, texts, mat_seeds, setting, tiling="none", **gen)[0]
        ref = reference_images([a for a, _ in mats], final, args.seed)
        out["material_tiled"] = dict(material_seams(tiled, period), count=m)
        out["material_untiled_control"] = {"x": pooled_seam(plain, 1), "y": pooled_seam(plain, 0), "count": m}
        out["material_procedural"] = {"x": pooled_seam(ref, 1), "y": pooled_seam(ref, 0), "count": len(ref)}
    return out


# ---------------------------------------------------------------- command line


def _count(text: str) -> tuple[int, int]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"count must be N or LANDSCAPES,MATERIALS (>= 0), got {text!r}")
    return int(parts[0]), int(parts[-1])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imagen eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument("--count", type=_count, default=(64, 32), help="prompts per kind: N or LANDSCAPES,MATERIALS (64,32)")
    p.add_argument("--settings", default=DEFAULT_SETTINGS, help=f"base-stage SAMPLER:STEPS list ({DEFAULT_SETTINGS})")
    p.add_argument("--sr-steps", type=int, default=10, help="DPM-Solver++ steps of the SR stages, every setting (10)")
    p.add_argument("--guidance", type=float, default=5.0,
                   help="classifier-free guidance of the base stage (the SR stages run unguided)")
    p.add_argument("--batch", type=int, default=16, help="prompts per base-stage generate call")
    p.add_argument("--seed", type=int, default=0, help="picks the prompts and the sampling seeds")
    p.add_argument("--panoramas", type=int, default=8, help="prompts for the seam section (8; 0: skip it)")
    p.add_argument("--extras-setting", help="SAMPLER:STEPS for seams and grid (default: the last setting)")
    p.add_argument("--grid-rows", type=int, default=8, help="prompts in grid.png")
    p.add_argument("--grid-seeds", type=int, default=4, help="seeds per prompt in grid.png (0: no grid)")
    p.add_argument("--write-benchmarks", metavar="PATH", help="put table and plot into this markdown file")
    p.add_argument("--judge-weights", help="judge nets file (default: next to classifier.py; trained if missing)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def cli_main(argv: list[str]) -> int:
    """`imagen eval ...` (also `imagen eval -- ...` and `python -m imagen_addon.eval.evaluate ...`)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        parse_settings(args.settings)
        if args.extras_setting:
            parse_settings(args.extras_setting)
        if args.sr_steps < 1 or args.batch < 1 or sum(args.count) < 1:
            raise ValueError("--sr-steps and --batch must be >= 1 and --count must ask for some prompts")
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    results = run(args)
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    table = table_markdown(results)
    (out / "table.md").write_text(table, "utf-8")
    plot = out / "accuracy_vs_steps.png"
    plot_accuracy(results, plot)
    if args.write_benchmarks:
        bench = Path(args.write_benchmarks)
        link = Path(os.path.relpath(plot.resolve(), bench.resolve().parent)).as_posix()
        write_benchmarks(bench, f"## Prompt following (`imagen eval`)\n\n{table}\n![accuracy vs steps]({link})\n")
    print(f"wrote {out / 'results.json'}, {out / 'table.md'} and pictures")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(sys.argv[1:]))
