"""Procedural Worlds v1: captioned landscapes, panoramas and seamless materials (numpy + Pillow only).

The contract is `shared/procedural-worlds.md`. Public API:
    sample_attributes(rng, kind=None, exclude=None) -> dict     # attribute record, see `vocab`
    caption(attrs, rng) -> str                                   # spec vocabulary only
    render_landscape(attrs, (w, h), rng, wrap_x=False) -> uint8 [h, w, 3]
    render_material(attrs, size, rng) -> uint8 [size, size, 3]  # tiles on both axes
    render(attrs, size, rng) -> uint8 image                      # panoramas are (2 * size) x size
    generate_dataset(out_dir, count, size=128, seed=0, ...) -> Path
    cli_main(argv) -> int                                        # `imagen data worlds ...`
Image i is drawn from `np.random.default_rng([seed, i])` alone (kind, attributes, caption, pixels, in that
order), so a dataset is the same byte for byte whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .heldout import is_held_out
from .vocab import caption, sample_attributes
from .worlds_landscape import landscape_layout, render_landscape
from .worlds_material import render_material

__all__ = ["caption", "cli_main", "generate_dataset", "landscape_layout", "make_record", "render",
           "render_landscape", "render_material", "sample_attributes"]

PNG_OPTIONS = {"format": "PNG", "compress_level": 3, "optimize": False}
METADATA = "metadata.jsonl"


def render(attrs: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """The image for an attribute record: a square, or a 2:1 horizontally wrapping panorama."""
    if attrs["kind"] == "material":
        return render_material(attrs, size, rng)
    if attrs.get("panorama"):
        return render_landscape(attrs, (2 * size, size), rng, wrap_x=True)
    return render_landscape(attrs, (size, size), rng)


def make_record(index: int, size: int, seed: int, panorama_fraction: float, material_fraction: float,
                exclude: Callable[[dict], bool] | None = None) -> tuple[dict, str, np.ndarray]:
    """(attributes, caption, image) of image `index`, drawn from its own generator `default_rng([seed, index])`."""
    rng = np.random.default_rng([seed, index])
    kind = "material" if rng.random() < material_fraction else "landscape"
    attrs = sample_attributes(rng, kind, exclude)
    if kind == "landscape" and rng.random() < panorama_fraction:
        attrs["panorama"] = True
    text = caption(attrs, rng)
    return attrs, text, render(attrs, size, rng)


def check_options(count: int, size: int, seed: int, panorama_fraction: float, material_fraction: float) -> None:
    """Raise ValueError with a readable message for options the generator cannot honour."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if size < 16 or size % 8:
        raise ValueError(f"size must be a multiple of 8 and at least 16, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    for name, value in (("panorama fraction", panorama_fraction), ("material fraction", material_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


_JOB: dict = {}  # per-process job settings, set by `_init_worker`


def _init_worker(job: dict) -> None:
    _JOB.clear()
    _JOB.update(job)


@contextmanager
def _mapper(job: dict, workers: int):
    """An ordered `imap(function, items)`: in this process, or over a pool of `workers` processes."""
    if workers <= 1:
        _init_worker(job)
        yield map
        return
    with multiprocessing.Pool(workers, _init_worker, (job,)) as pool:
        yield lambda function, items: pool.imap(function, items, chunksize=16)


def _make_file(index: int) -> str:
    """Render image `index`, write it atomically, return its metadata line."""
    job = _JOB
    attrs, text, img = make_record(index, job["size"], job["seed"], job["panorama_fraction"],
                                   job["material_fraction"], job["exclude"])
    name = f"{index:08d}.png"
    _write_atomic(job["out"] / name, lambda tmp: Image.fromarray(img, "RGB").save(tmp, **PNG_OPTIONS))
    return json.dumps({"file_name": name, "text": text, "attributes": attrs}, ensure_ascii=False)


def generate_dataset(out_dir: str | os.PathLike, count: int, size: int = 128, seed: int = 0,
                     panorama_fraction: float = 0.25, material_fraction: float = 0.4, progress: bool = True,
                     exclude: Callable[[dict], bool] | None = None, workers: int | None = None) -> Path:
    """Write `count` images `00000000.png ...` and then `metadata.jsonl` to `out_dir`; return its path.

    `exclude(attrs) -> True` holds attribute combinations out (it must be picklable when `workers` > 1).
    `workers` None uses two processes for large jobs; the output does not depend on it.
    """
    check_options(count, size, seed, panorama_fraction, material_fraction)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    job = {"out": out, "size": size, "seed": seed, "panorama_fraction": panorama_fraction,
           "material_fraction": material_fraction, "exclude": exclude}
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if count >= 200 else 1
    lines = []
    with tqdm(total=count, disable=not progress, desc="worlds", unit="img") as bar, _mapper(job, workers) as imap:
        for line in imap(_make_file, range(count)):
            lines.append(line)
            bar.update(1)
    _write_atomic(out / METADATA, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in lines), "utf-8"))
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagen data worlds",
        description="Generate a Procedural Worlds v1 dataset: captioned landscapes, panoramas and materials.")
    parser.add_argument("--out", required=True, help="output folder (PNGs + metadata.jsonl)")
    parser.add_argument("--count", type=int, required=True, help="number of images")
    parser.add_argument("--size", type=int, default=128, help="image height in pixels (multiple of 8, >= 16)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same bytes)")
    parser.add_argument("--panorama-fraction", type=float, default=0.25, help="share of landscapes that are 2:1")
    parser.add_argument("--material-fraction", type=float, default=0.4, help="share of images that are materials")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: 2 for large jobs)")
    parser.add_argument("--hold-out", action="store_true",
                        help="leave out the attribute combinations `imagen eval` tests (see data/heldout.py)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def cli_main(argv: list[str]) -> int:
    """`imagen data worlds --out DIR --count N --size S [--seed K] [...]`; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the error (or the help)
        return int(exc.code or 0)
    try:
        check_options(args.count, args.size, args.seed, args.panorama_fraction, args.material_fraction)
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"workers must be >= 1, got {args.workers}")
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        out = generate_dataset(args.out, args.count, args.size, args.seed, args.panorama_fraction,
                               args.material_fraction, progress=not args.quiet, workers=args.workers,
                               exclude=is_held_out if args.hold_out else None)
    except OSError as exc:
        print(f"{parser.prog}: error: cannot write the dataset: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.count} images and {METADATA} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(sys.argv[1:]))
