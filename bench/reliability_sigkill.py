"""The runtime killed (SIGKILL) at random moments, many times, and restarted each time by the add-on's launcher logic
(imagen_addon.blender.worker.connect), with the real server around the fake model. Each round finishes a job,
queues six short jobs and a long one, and kills the process while they run and their results are written.
Checks after each kill and restart (tests/reliability/reliability_support.kill_restart_rounds): the waiting client
gets a clear RuntimeClientError, every job reported done is a complete PNG + JSON pair, nothing is left half-written.

    python bench/reliability_sigkill.py [--kills 20] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

from reliability_support import kill_restart_rounds, local_fake_runtime  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, local_fake_runtime(Path(tmp)) as (config, out):
        figures = kill_restart_rounds(config, out, kills=args.kills, seed=args.seed)
    figures = {"bench": "reliability_sigkill", **figures, "seconds": round(time.monotonic() - t0, 1)}
    figures.pop("pids")
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    sys.exit(0 if main()["bytes_lost"] == 0 else 1)
