"""Faults: the runtime killed mid-job and restarted by the add-on's launcher logic, and a full disk while a result
or a training checkpoint is written. Training killed at random moments (also mid-checkpoint) is
tests/train/test_trainer.py::test_sigkill_any_moment_resumes_from_complete_checkpoint; the extension disabled
during a generation is tests/reliability/test_blender.py."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch
from reliability_fixtures import fakes, make_api  # noqa: F401 (fixtures)
from reliability_support import AUTH, check_pair, kill_restart_rounds, local_fake_runtime, wait_for

from imagen_addon.core import checkpoint as core_checkpoint
from imagen_addon.runtime import jobs as jobs_module
from imagen_addon.runtime.launcher import pid_alive
from imagen_addon.train import checkpoints as ck

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
KILLS = 4


# ---- runtime SIGKILL mid-job, restarted by the launcher ------------------------------------------------------------
def test_runtime_sigkill_mid_job_then_launcher_restart(tmp_path):
    """KILLS times: run jobs, SIGKILL the runtime at a random moment while jobs run and results are written.
    The waiting client gets a clear RuntimeClientError; every job the runtime reported done is a complete PNG +
    JSON pair; the launcher logic (worker.connect) starts a new runtime, which generates again.
    bench/reliability_sigkill.py runs more rounds."""
    with local_fake_runtime(tmp_path) as (config, out):
        figures = kill_restart_rounds(config, out, kills=KILLS, seed=8)
    assert figures["restarts"] == KILLS and figures["bytes_lost"] == 0 and figures["jobs_reported_done"] > KILLS
    assert all(m.startswith(("The Imagen runtime is not running at <url>", "The connection to the Imagen runtime at"))
               for m in figures["messages"]), figures["messages"]
    assert not pid_alive(figures["pids"][-1])
    print(f"\nRELIABILITY sigkill: {json.dumps({k: v for k, v in figures.items() if k != 'pids'})}")


# ---- disk full while writing a result -------------------------------------------------------------------------------
class _PartialFile:
    """A file object whose write() stores half the data, then fails as a full disk does."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        raise ENOSPC

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class FullDisk:
    """Stands in for the `os` (and `tempfile`) module of one writer module: call number `nth` of `op` fails
    with ENOSPC ("write" writes half the data first); everything else is the real function."""

    def __init__(self, op: str, nth: int = 1):
        self.op, self.nth, self.calls, self.failed = op, nth, 0, 0

    def _due(self, op: str) -> bool:
        if op != self.op:
            return False
        self.calls += 1
        if self.calls == self.nth:
            self.failed += 1
            return True
        return False

    def __getattr__(self, name):
        real = getattr(os, name)
        if name in ("fsync", "replace", "rename", "mkdir"):
            def fail_or_call(*args, **kwargs):
                if self._due(name):
                    raise ENOSPC
                return real(*args, **kwargs)
            return fail_or_call
        if name == "fdopen":
            def fdopen(*args, **kwargs):
                f = real(*args, **kwargs)
                return _PartialFile(f) if self._due("write") else f
            return fdopen
        return real

    def mkstemp(self, *args, **kwargs):  # as tempfile.mkstemp
        import tempfile

        if self._due("mkstemp"):
            raise ENOSPC
        return tempfile.mkstemp(*args, **kwargs)


# (operation, which call fails): call 1 writes the JSON sidecar, call 2 the PNG.
RESULT_FAULTS = [(op, nth) for nth in (1, 2) for op in ("mkstemp", "write", "fsync", "replace")]


@pytest.mark.parametrize("op, nth", RESULT_FAULTS, ids=[f"{op}-{'json' if n == 1 else 'png'}"
                                                         for op, n in RESULT_FAULTS])
def test_disk_full_while_writing_a_result(make_api, monkeypatch, op, nth):
    client, _, out = make_api()

    def run(prompt):
        job_id = client.post("/v1/jobs", json={"prompt": prompt, "steps": 1}, headers=AUTH).json()["id"]

        def finished():
            state = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
            return state if state["status"] in ("done", "failed") else None

        return wait_for(finished)

    before = run("before")
    assert before["status"] == "done"
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    disk = FullDisk(op, nth)
    monkeypatch.setattr(jobs_module, "os", disk)
    monkeypatch.setattr(jobs_module, "tempfile", disk)
    failed = run("disk full")
    monkeypatch.undo()
    assert disk.failed == 1
    assert failed["status"] == "failed" and failed["result"] is None
    assert failed["error"] == f"could not write the result to {out}: [Errno 28] No space left on device"
    assert client.get(f"/v1/jobs/{failed['id']}/image", headers=AUTH).status_code == 409
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept  # previous pair intact, nothing half-written
    assert client.get("/v1/health").json()["status"] == "ok"
    after = run("space freed")  # the runtime keeps serving once there is room again
    assert after["status"] == "done"
    check_pair(out, after["id"])


# ---- disk full while writing a training checkpoint ------------------------------------------------------------------
def tiny_training_state():
    torch.manual_seed(0)
    stages = {0: torch.nn.Linear(4, 4)}
    ema = {0: torch.nn.Linear(4, 4)}
    optimizers = {0: torch.optim.AdamW(stages[0].parameters(), lr=1e-3)}
    stages[0](torch.ones(1, 4)).sum().backward()
    optimizers[0].step()
    schedulers = {0: torch.optim.lr_scheduler.LambdaLR(optimizers[0], lambda n: 1.0)}
    return stages, ema, optimizers, schedulers


class _TorchFullDisk:
    """Stands in for `torch` in train/checkpoints.py: torch.save writes part of the state, then ENOSPC."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def save(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise ENOSPC


# (module whose os is replaced, operation, which call fails)
# train/checkpoints.py's os: fsync call 1 is training_state.pt, call 2 the temp folder; then the folder rename.
CHECKPOINT_FAULTS = [
    ("weights", "write", 1), ("weights", "fsync", 2), ("weights", "replace", 2), ("weights", "mkstemp", 1),
    ("state", "save", 1), ("folder", "fsync", 1), ("folder", "fsync", 2), ("folder", "rename", 1),
]


@pytest.mark.parametrize("where, op, nth", CHECKPOINT_FAULTS, ids=[f"{w}-{o}{n}" for w, o, n in CHECKPOINT_FAULTS])
def test_disk_full_while_writing_a_checkpoint(tmp_path, monkeypatch, where, op, nth):
    stages, ema, optimizers, schedulers = tiny_training_state()
    run = tmp_path / "run"
    previous = ck.save_checkpoint(run, 2, stages, ema, optimizers, schedulers, {0: 2}, keep=3)
    kept = {p.name: p.read_bytes() for p in previous.iterdir()}
    if where == "weights":
        disk = FullDisk(op, nth)
        monkeypatch.setattr(core_checkpoint, "os", disk)
        monkeypatch.setattr(core_checkpoint, "tempfile", disk)
    elif where == "state":
        monkeypatch.setattr(ck, "torch", _TorchFullDisk())
    else:
        disk = FullDisk(op, nth)
        monkeypatch.setattr(ck, "os", disk)
    with pytest.raises(OSError) as info:
        ck.save_checkpoint(run, 4, stages, ema, optimizers, schedulers, {0: 4}, keep=3)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and "No space left on device" in str(info.value)
    assert ck.latest_checkpoint(run) == previous
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == kept
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [previous.name]  # no partial folder left
    fresh = tiny_training_state()
    assert ck.load_checkpoint(previous, fresh[0], fresh[1], fresh[2], fresh[3]) == 2
    torch.testing.assert_close(fresh[0][0].weight, stages[0].weight)
