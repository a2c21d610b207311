"""A really full disk (a small tmpfs, so the kernel itself answers ENOSPC) under the runtime's output folder and
under a training run's checkpoints. The suite simulates the same with failing writers
(tests/reliability/test_faults.py); this checks the real thing. Needs root (mount); otherwise it says so and exits 0.

Results: the runtime writes jobs until the disk is full; the job that does not fit fails with a clear error, every
earlier result is intact, nothing half-written is left, health stays ok, and once space is freed jobs succeed again.
Checkpoints: a save that does not fit raises ENOSPC, the previous checkpoint stays the latest and loads, and no
partial folder is left taking space.

    sudo python bench/reliability_disk_full.py [--json out.json]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

from reliability_support import AUTH, Runtime, check_pair, result_files, wait_job  # noqa: E402


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of `folder` with one file, then give back `leave` bytes."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def results_on_full_disk(root: Path) -> dict:
    out = root / "out"
    assert mount_tmpfs(out, "4m")
    try:
        with Runtime(root, log=False) as runtime, runtime.client() as http:
            filler = fill(out, leave=48 * 1024)
            done, kept, failed = [], {}, None
            for i in range(200):
                job = http.post("/v1/jobs", json={"prompt": f"fill {i}", "seed": i, "steps": 1, "width": 512,
                                                 "height": 512}, headers=AUTH).json()["id"]
                state = wait_job(http, AUTH, job)
                if state["status"] != "done":
                    failed = state
                    break
                done.append(job)
                kept[job] = (out / f"imagen-{job}.png").read_bytes()
            assert failed is not None and failed["status"] == "failed", "the disk never filled up"
            assert "No space left on device" in failed["error"], failed["error"]
            files = result_files(out)
            assert not files["temp"] and not files["lone"] and files["other"] == ["filler.bin"], files
            lost = sum(len(png) for job, png in kept.items() if (out / f"imagen-{job}.png").read_bytes() != png)
            for job in done:
                check_pair(out, job)
            healthy = http.get("/v1/health").json()["status"] == "ok"
            filler.unlink()  # space freed
            again = wait_job(http, AUTH, http.post("/v1/jobs", json={"prompt": "after", "steps": 1},
                                                   headers=AUTH).json()["id"])
            assert again["status"] == "done" and healthy
            return {"jobs_done_before_full": len(done), "failed_job_error": failed["error"], "bytes_lost": lost,
                    "half_written_files": len(files["temp"]) + len(files["lone"]), "healthy": healthy,
                    "job_after_freeing_space": again["status"]}
    finally:
        subprocess.run(["umount", str(out)], check=False)


def checkpoint_on_full_disk(root: Path) -> dict:
    import torch

    from imagen_addon.train import checkpoints as ck

    run = root / "run"
    assert mount_tmpfs(run, "6m")
    try:
        torch.manual_seed(0)
        stages, ema = {0: torch.nn.Linear(512, 512)}, {0: torch.nn.Linear(512, 512)}  # 1 MB each
        optimizers = {0: torch.optim.AdamW(stages[0].parameters())}
        stages[0](torch.ones(1, 512)).sum().backward()
        optimizers[0].step()  # 2 MB of optimizer state: ~4 MB a checkpoint, two do not fit in 6 MB
        schedulers = {0: torch.optim.lr_scheduler.LambdaLR(optimizers[0], lambda n: 1.0)}
        previous = ck.save_checkpoint(run, 1, stages, ema, optimizers, schedulers, {0: 1}, keep=3)
        kept = {p.name: p.read_bytes() for p in previous.iterdir()}
        try:
            ck.save_checkpoint(run, 2, stages, ema, optimizers, schedulers, {0: 2}, keep=3)
            raise AssertionError("the second checkpoint fitted: make the tmpfs smaller")
        except OSError as err:
            error = str(err)
            assert err.errno == errno.ENOSPC, err
        left = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert ck.latest_checkpoint(run) == previous and left == [previous.name], left
        assert {p.name: p.read_bytes() for p in previous.iterdir()} == kept
        assert ck.load_checkpoint(previous, stages, ema, optimizers, schedulers) == 1
        free = os.statvfs(run)
        return {"error": error, "previous_checkpoint_intact": True, "left_in_checkpoints": left,
                "free_bytes_after": free.f_bavail * free.f_frsize}
    finally:
        subprocess.run(["umount", str(run)], check=False)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if not mount_tmpfs(Path(tmp) / "probe", "64k"):
            print("skipped: mounting a tmpfs needs root (and mount rights) here")
            return {"bench": "reliability_disk_full", "skipped": True}
        subprocess.run(["umount", str(Path(tmp) / "probe")], check=False)
        report = {"bench": "reliability_disk_full", "results": results_on_full_disk(Path(tmp) / "r"),
                  "checkpoint": checkpoint_on_full_disk(Path(tmp) / "c")}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
