"""Helpers of the reliability tests and bench/reliability_*.py: a runtime process around the fake model, its
memory and thread count from /proc, and the output-folder invariant (only complete PNG + JSON pairs)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from PIL import Image
from reliability_serve import load_runtime_fakes

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOKEN = "reliability-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINISHED = ("done", "failed", "cancelled")


def proc_status(pid: int) -> dict[str, int]:
    """Resident memory (kB) and thread count of a live process, from /proc/<pid>/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return {"rss_kb": int(fields["VmRSS"][0]), "threads": int(fields["Threads"][0])}


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} writes them) of the LISTEN sockets on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.02):
    """tests/runtime/conftest.py's `wait_for`, with the longer defaults of runs against a subprocess."""
    return load_runtime_fakes().wait_for(predicate, timeout, interval)


class Runtime:
    """`python -m reliability_serve` (the real server, fake model) in a subprocess; a context manager."""

    def __init__(self, workdir: Path, *args: str, step_delay: float = 0.0, token: str | None = TOKEN,
                 log: bool = True):
        self.workdir = Path(workdir)
        self.out = self.workdir / "out"
        self.log_dir = self.workdir / "log" if log else None
        self.args, self.step_delay, self.token = list(args), step_delay, token
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.ready: dict = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> "Runtime":
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "IMAGEN_RUNTIME_TOKEN"}
        env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]), IMAGEN_FAKE_STEP_DELAY=str(self.step_delay))
        if self.token:
            env["IMAGEN_RUNTIME_TOKEN"] = self.token
        if self.log_dir is not None:
            self.log_dir.mkdir(exist_ok=True)
            env["IMAGEN_FAKE_LOG"] = str(self.log_dir)
        cmd = [sys.executable, "-m", "reliability_serve", "--output", str(self.out), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=self.workdir)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        try:
            while True:
                line = lines.get(timeout=120)
                if line.startswith("IMAGEN_RUNTIME_READY "):
                    self.ready = json.loads(line.split(" ", 1)[1])
                    self.url = self.ready["url"]
                    return self
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"runtime never became ready: {self.proc.stderr.read()}") from None

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def status(self) -> dict[str, int]:
        return proc_status(self.pid)

    def logged(self, name: str) -> list[str]:
        assert self.log_dir is not None
        path = self.log_dir / name
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def stop(self) -> int | None:
        """SIGTERM (clean shutdown), then SIGKILL if it hangs; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=60)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        return self.proc.returncode

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_job(http: httpx.Client, auth: dict, job_id: str, statuses=FINISHED, timeout: float = 120.0) -> dict:
    def state():
        body = http.get(f"/v1/jobs/{job_id}", headers=auth).json()
        return body if body["status"] in statuses else None

    return wait_for(state, timeout=timeout, interval=0.02)


def result_files(out: Path) -> dict[str, list[str]]:
    """The output folder by kind: complete `pairs` (PNG ids), `lone` result files, `temp` files, `other`."""
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    kinds: dict[str, list[str]] = {"pairs": [], "lone": [], "temp": [], "other": []}
    for name in names:
        stem, _, ext = name.rpartition(".")
        if name.startswith(".imagen-") and name.endswith(".tmp"):
            kinds["temp"].append(name)
        elif name.startswith("imagen-") and ext in ("png", "json"):
            partner = f"{stem}.{'json' if ext == 'png' else 'png'}"
            if partner in names:
                if ext == "png":
                    kinds["pairs"].append(stem.removeprefix("imagen-"))
            else:
                kinds["lone"].append(name)
        else:
            kinds["other"].append(name)
    return kinds


def check_pair(out: Path, job_id: str) -> dict:
    """Assert imagen-<id>.png decodes completely and its sidecar is valid JSON for that job; return the sidecar."""
    png, sidecar = out / f"imagen-{job_id}.png", out / f"imagen-{job_id}.json"
    with Image.open(png) as image:
        image.load()
        text = dict(image.text)
    meta = json.loads(sidecar.read_text())
    assert meta["id"] == job_id and meta["file"] == png.name, meta
    assert text["prompt"] == meta["settings"]["prompt"] and text["seed"] == str(meta["settings"]["seed"])
    return meta


# ---- the add-on's launcher logic around a runtime that gets killed -------------------------------------------------
@contextlib.contextmanager
def local_fake_runtime(workdir: Path, step_delay: float = 0.01):
    """A LOCAL-mode RuntimeConfig whose launcher (imagen_addon.blender.worker) starts `reliability_serve` instead of
    a model; yields (config, output folder) and stops every runtime it started afterwards."""
    from imagen_addon.blender import worker
    from imagen_addon.blender.logic import RuntimeConfig
    from imagen_addon.runtime.launcher import RuntimeLauncher

    out = Path(workdir) / "out"
    saved_env = {k: os.environ.get(k) for k in ("PYTHONPATH", "IMAGEN_FAKE_STEP_DELAY")}
    saved_launcher = worker.RuntimeLauncher
    os.environ.update(PYTHONPATH=str(HERE), IMAGEN_FAKE_STEP_DELAY=str(step_delay))
    worker.RuntimeLauncher = functools.partial(RuntimeLauncher, module="reliability_serve", ready_timeout=120,
                                               extra_args=["--output", str(out)])
    config = RuntimeConfig(mode="LOCAL", state_dir=str(Path(workdir) / "state"), python=sys.executable,
                           model_dir="fake-model", auto_start=True, timeout=30)
    try:
        yield config, out
    finally:
        worker.stop_all_launchers()
        worker.RuntimeLauncher = saved_launcher
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def kill_restart_rounds(config, out: Path, kills: int, seed: int) -> dict:
    """`kills` rounds of: (re)connect through the launcher logic (worker.connect starts a runtime when none runs),
    finish one job, queue six short jobs and a long one, SIGKILL the runtime at a random moment while they run and
    their results are written. Asserts after each kill: the waiting client got a clear RuntimeClientError, every
    job reported done is a complete PNG + JSON pair, a PNG never lacks its sidecar; after each restart: no temp or
    lone files. Returns the figures."""
    from imagen_addon.blender import worker
    from imagen_addon.runtime.client import RuntimeClientError

    rng = random.Random(seed)
    reported_done: dict[str, bytes] = {}  # job id -> PNG bytes as downloaded / first seen
    pids: list[int] = []
    messages: list[str] = []
    for round_ in range(kills + 1):
        client = worker.connect(config)
        info = worker.launcher_for(config).running()
        assert info is not None and info.pid not in pids
        pids.append(info.pid)
        files = result_files(out)
        assert not files["temp"] and not files["lone"], files  # the new runtime cleaned up at start
        first = worker.run_job_sync(client, {"prompt": f"round {round_}", "seed": round_, "steps": 1}, poll=0.02)
        reported_done[first.job_id] = first.png
        if round_ == kills:
            break
        ids = [client.submit(prompt=f"round {round_} job {i}", seed=i, steps=2) for i in range(6)]
        errors: list[BaseException] = []

        def long_job():
            try:
                worker.run_job_sync(client, {"prompt": "long", "steps": 250}, poll=0.02)
            except RuntimeClientError as err:
                errors.append(err)

        waiter = threading.Thread(target=long_job)
        waiter.start()
        seen_done: list[str] = []
        deadline = time.monotonic() + rng.uniform(0.05, 0.6)
        while time.monotonic() < deadline:  # what the runtime reports done before the kill
            for job_id in ids:
                if job_id not in seen_done and client.status(job_id)["status"] == "done":
                    seen_done.append(job_id)
        os.kill(info.pid, signal.SIGKILL)
        waiter.join(60)
        assert not waiter.is_alive() and len(errors) == 1, errors
        assert errors[0].kind == "connection" and info.url in str(errors[0]), errors[0]
        messages.append(str(errors[0]))
        try:  # "is not running at <url> (connection refused)", or "connection reset" while the socket closes
            client.health()
            raise AssertionError("the killed runtime still answers")
        except RuntimeClientError as err:
            assert err.kind == "connection" and "Imagen runtime" in str(err) and info.url in str(err), err
            messages.append(str(err))
        files = result_files(out)
        assert not files["other"] and all(name.endswith(".json") for name in files["lone"]), files
        for job_id in seen_done + list(reported_done):
            check_pair(out, job_id)
        reported_done.update({job_id: (out / f"imagen-{job_id}.png").read_bytes() for job_id in seen_done})
    files = result_files(out)
    assert not files["temp"] and not files["lone"] and set(reported_done) <= set(files["pairs"]), files
    lost = sum(len(png) for job_id, png in reported_done.items()
               if (out / f"imagen-{job_id}.png").read_bytes() != png)
    return {"kills": kills, "restarts": len(pids) - 1, "jobs_reported_done": len(reported_done),
            "pairs_on_disk": len(files["pairs"]), "bytes_lost": lost, "pids": pids,
            "messages": sorted({re.sub(r"http://[\w.]+:\d+", "<url>", message) for message in messages})}
