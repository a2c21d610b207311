"""Load: two clients submit 50 jobs each at the same time to one runtime process (the real server around the fake
model, a small delay per sampler step, queue of 8). Every submission is accepted or refused with 429 (then retried);
every accepted job completes with its own prompt, seed and image; jobs start in the order they were accepted; memory
and threads are back to their baseline afterwards."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter

from PIL import Image
from reliability_support import AUTH, Runtime, wait_job

CLIENTS, JOBS = 2, 50
MB = 1024  # kB


def run_clients(runtime: Runtime, jobs: int, tag: str) -> tuple[list[tuple[str, str, int]], Counter]:
    """CLIENTS threads each submit `jobs` jobs (retrying on 429), then wait for and check each of them.
    Returns the accepted (id, prompt, seed) and the number of 429 answers per client."""
    accepted: list[tuple[str, str, int]] = []
    refused: Counter = Counter()
    errors: list[BaseException] = []
    barrier = threading.Barrier(CLIENTS)
    lock = threading.Lock()

    def client(c: int) -> None:
        mine = []
        try:
            with runtime.client() as http:
                barrier.wait()
                for i in range(jobs):
                    prompt, seed = f"{tag} client {c} job {i}", 1000 * c + i
                    while True:
                        response = http.post("/v1/jobs", json={"prompt": prompt, "seed": seed, "steps": 2},
                                             headers=AUTH)
                        if response.status_code == 202:
                            mine.append((response.json()["id"], prompt, seed))
                            break
                        assert response.status_code == 429, response.text
                        assert response.json()["error"] == "queue is full (8 jobs); try again later"
                        refused[c] += 1
                        time.sleep(0.01)
                for job_id, prompt, seed in mine:
                    check_job(http, job_id, prompt, seed)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        with lock:
            accepted.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert not errors, errors
    assert len(accepted) == CLIENTS * jobs
    return accepted, refused


def check_job(http, job_id: str, prompt: str, seed: int) -> None:
    """The job is done and everything it reports and serves belongs to it (the fake model paints seed % 256)."""
    state = wait_job(http, AUTH, job_id)
    assert state["status"] == "done", state
    result = state["result"]
    assert (result["seed"], result["settings"]["prompt"], result["settings"]["seed"]) == (seed, prompt, seed)
    png = Image.open(io.BytesIO(http.get(f"/v1/jobs/{job_id}/image", headers=AUTH).content))
    assert (png.text["prompt"], png.text["seed"]) == (prompt, str(seed))
    assert png.getpixel((0, 0)) == (seed % 256, 10, 20)


def test_two_clients_fifty_jobs_each(tmp_path):
    with Runtime(tmp_path, step_delay=0.002) as runtime:
        run_clients(runtime, 3, "warm-up")  # lazy imports, thread pool: in place before the baseline
        baseline = runtime.status()
        started_at = time.monotonic()
        accepted, refused = run_clients(runtime, JOBS, "load")
        seconds = time.monotonic() - started_at
        after = runtime.status()
        accepted_order, started_order = runtime.logged("accepted.log"), runtime.logged("started.log")
    assert len(accepted_order) == CLIENTS * (3 + JOBS)
    assert started_order == accepted_order  # FIFO: the worker starts jobs exactly in the order they were accepted
    for c in range(CLIENTS):  # and each client's own jobs in its submission order
        mine = [p for p in accepted_order if p.startswith(f"load client {c} ")]
        assert mine == [f"load client {c} job {i}" for i in range(JOBS)]
    for job_id, prompt, seed in accepted:  # the result files on disk belong to their job too
        sidecar = json.loads((runtime.out / f"imagen-{job_id}.json").read_text())
        assert (sidecar["id"], sidecar["settings"]["prompt"], sidecar["settings"]["seed"]) == (job_id, prompt, seed)
    assert len(list(runtime.out.glob("imagen-*.png"))) == CLIENTS * (3 + JOBS)
    assert sum(refused.values()) > 0  # the queue did fill up: the 429 path was exercised
    assert after["rss_kb"] - baseline["rss_kb"] < 16 * MB, (baseline, after)
    assert after["threads"] <= baseline["threads"], (baseline, after)
    print(f"\nRELIABILITY load: clients={CLIENTS} jobs={len(accepted)} done={len(accepted)} "
          f"refused_429={sum(refused.values())} seconds={seconds:.1f} rss_kB {baseline['rss_kb']}->{after['rss_kb']} "
          f"threads {baseline['threads']}->{after['threads']}")
