"""Hostile checkpoint files. Model folders (truncated safetensors, wrong shapes, another text encoder, a pickle named
`.safetensors`) are tests/core/test_imagen.py::test_truncated_and_pickled_weights, ::test_mismatched_shapes_are_named
and ::test_refuses_another_encoder. Here: a training state whose pickle would run code when loaded."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from imagen_addon.train import checkpoints as ck


class Payload:
    """Unpickling this calls os.mkdir(marker): harmless, and visible if it ever runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def malicious_state(path, marker) -> None:
    torch.save({"step": 7, "optimizers": {"0": {"state": {}, "param_groups": [], "x": Payload(str(marker))}},
                "schedulers": {}}, path)


def test_the_payload_is_live(tmp_path):
    """Control: loaded the unsafe way, the file does run its code; so the refusals below are meaningful."""
    marker = tmp_path / "executed"
    malicious_state(tmp_path / "training_state.pt", marker)
    torch.load(tmp_path / "training_state.pt", weights_only=False)
    assert marker.is_dir()


def test_weights_only_load_refuses_without_executing(tmp_path):
    marker = tmp_path / "executed"
    malicious_state(tmp_path / "training_state.pt", marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(tmp_path / "training_state.pt", map_location="cpu", weights_only=True)
    assert not marker.exists()


def test_resume_from_a_malicious_training_state_is_refused(tmp_path):
    """The trainer's own loader (load_checkpoint, used by --resume) on a checkpoint whose training_state.pt was
    swapped for a malicious one: refused, nothing executed."""
    torch.manual_seed(0)
    stages, ema = {0: torch.nn.Linear(4, 4)}, {0: torch.nn.Linear(4, 4)}
    optimizers = {0: torch.optim.AdamW(stages[0].parameters())}
    schedulers = {0: torch.optim.lr_scheduler.LambdaLR(optimizers[0], lambda n: 1.0)}
    path = ck.save_checkpoint(tmp_path / "run", 7, stages, ema, optimizers, schedulers, {0: 7}, keep=2)
    marker = tmp_path / "executed"
    malicious_state(path / "training_state.pt", marker)
    with pytest.raises(pickle.UnpicklingError):
        ck.load_checkpoint(path, stages, ema, optimizers, schedulers)
    assert not marker.exists()
