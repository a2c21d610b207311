"""Training checkpoints: complete or absent, never half-written.

    RUN/checkpoints/step_00001000/
        stage_0.safetensors        raw weights        stage_0.ema.safetensors   EMA weights (what is exported)
        training_state.pt          optimizers, LR schedulers, step (torch.save of tensors and numbers only,
                                   read back with torch.load(weights_only=True): no pickled classes)
        meta.json                  step, per-stage steps, time

A checkpoint is written into a temporary folder, every file fsynced, then renamed to `step_N` in one atomic
rename: a run killed at any moment (also mid-write) leaves the previous checkpoint as the latest. Randomness is a
pure function of (seed, step, rank), so the state above is all that exact resumption needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import torch

from ..core.checkpoint import load_weights, save_weights

STEP_DIR = re.compile(r"^step_(\d{8})$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / "meta.json").is_file())


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, step: int, stages: dict[int, torch.nn.Module], ema: dict[int, torch.nn.Module],
                    optimizers: dict[int, torch.optim.Optimizer], schedulers: dict, stage_steps: dict[int, int],
                    keep: int) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for k in stages:
            save_weights(stages[k].state_dict(), tmp / f"stage_{k}.safetensors")
            save_weights(ema[k].state_dict(), tmp / f"stage_{k}.ema.safetensors")
        state = {"step": step,
                 "optimizers": {str(k): o.state_dict() for k, o in optimizers.items()},
                 "schedulers": {str(k): s.state_dict() for k, s in schedulers.items()}}
        with open(tmp / "training_state.pt", "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        meta = {"step": step, "stage_steps": {str(k): v for k, v in stage_steps.items()}, "time": time.time()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        _fsync_dir(tmp)
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:  # e.g. a full disk: give the space of the partial checkpoint back at once
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, stages, ema, optimizers, schedulers) -> int:
    """Restore everything saved by `save_checkpoint`; returns the global step."""
    from ..core.checkpoint import load_state_into  # noqa: PLC0415

    path = Path(path)
    for k in stages:
        load_state_into(stages[k], load_weights(path / f"stage_{k}.safetensors"), path)
        load_state_into(ema[k], load_weights(path / f"stage_{k}.ema.safetensors"), path)
    state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    for k in optimizers:
        optimizers[k].load_state_dict(state["optimizers"][str(k)])
        schedulers[k].load_state_dict(state["schedulers"][str(k)])
    return int(state["step"])


def clean_partial(run_dir: Path) -> None:
    """Remove temporary folders of checkpoints that were being written when a run died."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
