"""Bad input at volume against one runtime process (the real server around the fake model; no torch, no model):
hand-written hostile requests in bursts, a schemathesis fuzz of thousands of requests, and the two big-body
cases (a 37 MB body without the token, 2.5M unknown fields with it). Reports requests sent, status counts, 5xx (must
be 0), and the process's resident memory and threads at start, after warm-up, at peak and at the end.

    python bench/reliability_fuzz.py [--examples 3000] [--seconds 60] [--bursts 5] [--json out.json]

The fuzz stops at --examples or --seconds, whichever comes first. Exit code 1 if any 5xx, crash or unhealthy end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

from bad_requests import fuzz, send_bad_requests, send_raw  # noqa: E402
from reliability_support import AUTH, Runtime  # noqa: E402


class Peak:
    """Samples a process's RSS every 50 ms while active."""

    def __init__(self, runtime: Runtime):
        self.runtime, self.kb, self._stop = runtime, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.is_set():
            self.kb = max(self.kb, self.runtime.status()["rss_kb"])
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def big_bodies(runtime: Runtime) -> list[dict]:
    port = int(runtime.url.rsplit(":", 1)[1])
    rows = []
    body = b'{"prompt": [' + b"[]," * 13_000_000 + b"[]]}"
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with Peak(runtime) as peak:
        t0 = time.monotonic()
        status = send_raw("127.0.0.1", port, head + body)
    rows.append({"case": "37 MB JSON, no token", "status": status, "seconds": round(time.monotonic() - t0, 2),
                 "peak_rss_mb": peak.kb >> 10, "after_rss_mb": runtime.status()["rss_kb"] >> 10})
    fields = json.dumps({f"k{i}": 0 for i in range(2_500_000)}, separators=(",", ":")).encode()
    with Peak(runtime) as peak, runtime.client(timeout=600) as http:
        t0 = time.monotonic()
        status = http.post("/v1/jobs", content=fields, headers={**AUTH, "content-type": "application/json"})
    rows.append({"case": f"2.5M unknown fields ({len(fields) >> 20} MB), token", "status": status.status_code,
                 "seconds": round(time.monotonic() - t0, 2), "peak_rss_mb": peak.kb >> 10,
                 "after_rss_mb": runtime.status()["rss_kb"] >> 10})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=3000, help="schemathesis cases at most (default 3000)")
    p.add_argument("--seconds", type=float, default=60.0, help="time budget of the fuzz (default 60)")
    p.add_argument("--bursts", type=int, default=5, help="rounds of the hand-written cases after warm-up")
    p.add_argument("--no-big", action="store_true", help="skip the two big-body cases")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    report: dict = {"bench": "reliability_fuzz"}
    with tempfile.TemporaryDirectory() as tmp, Runtime(Path(tmp), "--queue-size", "4", log=False) as runtime:
        report["start"] = runtime.status()
        statuses: Counter = Counter()
        answers = send_bad_requests(runtime.url, AUTH)  # warm-up
        report["baseline"] = runtime.status()
        t0 = time.monotonic()
        for _ in range(args.bursts):
            answers += send_bad_requests(runtime.url, AUTH)
        report["hand_written"] = {"requests": len(answers), "cases": len(answers) // (args.bursts + 1),
                                  "seconds": round(time.monotonic() - t0, 1), "after": runtime.status()}
        statuses.update(status for _, status in answers)
        fuzzed: Counter = Counter()
        t0, chunk, seed = time.monotonic(), 250, 0
        while sum(fuzzed.values()) < args.examples and time.monotonic() - t0 < args.seconds:
            fuzzed += fuzz(runtime.url, AUTH, examples=min(chunk, args.examples - sum(fuzzed.values())), seed=seed)
            seed += 1
        report["fuzz"] = {"requests": sum(fuzzed.values()), "seconds": round(time.monotonic() - t0, 1),
                          "statuses": dict(sorted(fuzzed.items())), "after": runtime.status()}
        statuses.update(fuzzed)
        report["big_bodies"] = [] if args.no_big else big_bodies(runtime)
        with runtime.client() as http:
            health = http.get("/v1/health").json()
        report["end"] = runtime.status()
        report["healthy"] = health["status"] == "ok" and runtime.proc.poll() is None
    report["requests"] = sum(statuses.values()) + len(report["big_bodies"])
    report["statuses"] = dict(sorted(statuses.items()))
    report["server_errors"] = sum(n for s, n in statuses.items() if s >= 500) + sum(
        1 for row in report["big_bodies"] if row["status"] >= 500)
    print(f"requests {report['requests']} (hand-written {report['hand_written']['requests']}, schemathesis "
          f"{report['fuzz']['requests']} in {report['fuzz']['seconds']} s), 5xx {report['server_errors']}, "
          f"healthy {report['healthy']}")
    print(f"statuses {report['statuses']}")
    for key in ("start", "baseline", "end"):
        print(f"{key:9s} rss {report[key]['rss_kb'] >> 10} MB, threads {report[key]['threads']}")
    print(f"after hand-written bursts rss {report['hand_written']['after']['rss_kb'] >> 10} MB, after fuzz "
          f"{report['fuzz']['after']['rss_kb'] >> 10} MB")
    for row in report["big_bodies"]:
        print(f"{row['case']}: {row['status']} in {row['seconds']} s, peak {row['peak_rss_mb']} MB, after "
              f"{row['after_rss_mb']} MB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["server_errors"] == 0 and result["healthy"] else 1)
