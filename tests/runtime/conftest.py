"""Fixtures for the runtime server tests: a fake model with the `Imagen` API, and an app around it.

`FakeImagen` follows the model contract (`generate`, `upscale`, `info`, progress callback, `Cancelled`) without
torch, so server tests are fast. It records every call, can hold its first step until released (to test queue
and cancel deterministically), can be slowed down per step, and can raise an error from inside the model.
`tiny_imagen` is the real model (imagen_addon.core.imagen.tiny_config, untrained) for end-to-end tests; `HeldModel`
wraps a real model so its first sampler step waits (calling the server's callback) until released. At the end,
helpers shared by the test_server_*.py modules: submit a job and wait for it (in-process or over HTTP), check health,
start a runtime process and wait for its READY line, check the output folder holds only complete results.
"""

from __future__ import annotations

import base64
import io
import json
import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pytest
from PIL import Image

if TYPE_CHECKING:
    import httpx


class Cancelled(Exception):
    """What FakeImagen raises when the callback returns False (the real model raises core.samplers.Cancelled;
    the server treats any exception after a cancel request as the cancellation)."""


TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Progress:
    stage: int
    stage_count: int
    step: int
    steps: int
    preview: Callable[[], Image.Image]


class FakeImagen:
    """Two stages (8 px base, 16 px SR); images are flat colours; `calls` records (method, args, kwargs)."""

    def __init__(self, *, step_delay: float = 0.0, hold: bool = False, error: BaseException | None = None):
        self.step_delay = step_delay
        self.release = threading.Event()  # while not set, the first step repeats (callback each time)
        if not hold:
            self.release.set()
        self.started = threading.Event()  # set on the first progress callback
        self.error = error
        self.calls: list[tuple[str, tuple, dict]] = []

    def info(self) -> dict:
        return {"stages": [{"image_size": 8, "kind": "base"}, {"image_size": 16, "kind": "sr"}],
                "text_encoder": "fake@0", "model_hash": "fakehash0123", "native_size": (16, 16), "size_multiple": 8}

    def _sample(self, steps: int, callback) -> None:
        for stage in range(2):
            for step in range(1, steps + 1):
                while True:
                    p = Progress(stage, 2, step, steps, lambda: Image.new("RGB", (8, 8), (stage * 100, step, 0)))
                    self.started.set()
                    if callback is not None and callback(p) is False:
                        raise Cancelled("cancelled by the callback")
                    if self.release.is_set():
                        break
                    time.sleep(0.005)
                if self.step_delay:
                    time.sleep(self.step_delay)
        if self.error is not None:
            raise self.error

    def generate(self, prompts, *, seed=None, steps=25, size=None, callback=None, **kwargs):
        self.calls.append(("generate", (prompts,), dict(kwargs, seed=seed, steps=steps, size=size)))
        self._sample(steps, callback)
        width, height = size or self.info()["native_size"]
        return [Image.new("RGB", (width, height), (seed % 256, 10, 20))]

    def upscale(self, image, prompt="", *, seed=None, steps=25, callback=None, **kwargs):
        self.calls.append(("upscale", (image, prompt), dict(kwargs, seed=seed, steps=steps)))
        self._sample(steps, callback)
        return image.resize((image.width * 2, image.height * 2))


class HeldModel:
    """A real model whose first progress callback repeats (asking the server's callback each time) until
    `release` is set, so a test can cancel a job that is certainly mid-sampling."""

    def __init__(self, model):
        self.model = model
        self.release, self.started = threading.Event(), threading.Event()

    def info(self) -> dict:
        return self.model.info()

    def generate(self, *args, callback=None, **kwargs):
        return self.model.generate(*args, callback=self._held(callback), **kwargs)

    def upscale(self, *args, callback=None, **kwargs):
        return self.model.upscale(*args, callback=self._held(callback), **kwargs)

    def _held(self, callback):
        def held(p):
            self.started.set()
            while not self.release.is_set():
                if callback(p) is False:
                    return False
                time.sleep(0.005)
            return callback(p)

        return held


def png_b64(size=(16, 16), mode="RGB", color=0, fmt="PNG") -> str:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.01):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture(scope="session")
def tiny_imagen():
    """The real cascade at test size (16 px base, 32 px SR, untrained); skipped if the text encoder is missing."""
    imagen = pytest.importorskip("imagen_addon.core.imagen")
    from imagen_addon.core.text import TextEncoderError

    model = imagen.Imagen(imagen.tiny_config())
    try:
        model.generate("warm up", steps=1, seed=0)  # loads the text encoder once for the session
    except TextEncoderError as exc:
        pytest.skip(f"text encoder not available: {exc}")
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_imagen, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_imagen.save_pretrained(path)
    return path


@pytest.fixture
def fake_model() -> FakeImagen:
    return FakeImagen()


@pytest.fixture
def make_api(tmp_path):
    """make_api(model, queue_size=8) -> (TestClient, JobManager); everything is closed after the test."""
    from fastapi.testclient import TestClient

    from imagen_addon.runtime.jobs import JobManager
    from imagen_addon.runtime.server import create_app

    opened = []

    def make(model, queue_size: int = 8):
        jobs = JobManager(model, tmp_path / "out", max_queue=queue_size, model_hash=model.info()["model_hash"])
        jobs.start()
        app = create_app(jobs, token=TOKEN, model_info=model.info(), model_path="fake", device="cpu")
        client = TestClient(app)
        opened.append((client, jobs, model))
        return client, jobs

    yield make
    for client, jobs, model in opened:
        if hasattr(model, "release"):
            model.release.set()
        jobs.close()
        client.close()


@pytest.fixture
def api(make_api, fake_model):
    client, _ = make_api(fake_model)
    return client


# ---- helpers of the server tests --------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]
FINISHED = ("done", "failed", "cancelled")


def submit(client, **body) -> str:
    response = client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_job(client, job_id: str, statuses=FINISHED) -> dict:
    def state():
        body = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        return body if body["status"] in statuses else None

    return wait_for(state)


def assert_healthy(client) -> dict:
    response = client.get("/v1/health")
    assert response.status_code == 200
    return response.json()


def spawn(cmd: list[str], env: dict, cwd: Path):
    """Start a runtime process; return (process, READY info) once it prints its READY line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=120)
            if line.startswith("IMAGEN_RUNTIME_READY "):
                return proc, json.loads(line.split(" ", 1)[1])
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"runtime never became ready: {proc.stderr.read()}") from None


def only_complete_pairs(out: Path) -> list[str]:
    """Assert the output folder holds only complete PNG + JSON pairs; return the PNG names."""
    names = sorted(p.name for p in out.iterdir())
    pngs = [n for n in names if n.endswith(".png")]
    assert names == sorted(pngs + [n[:-4] + ".json" for n in pngs]), names
    for name in pngs:
        Image.open(out / name).load()
        json.loads((out / name).with_suffix(".json").read_text())
    return pngs


def wait_job_http(http: httpx.Client, auth: dict, job_id: str, statuses=FINISHED) -> dict:
    def state():
        body = http.get(f"/v1/jobs/{job_id}", headers=auth).json()
        return body if body["status"] in statuses else None

    return wait_for(state, timeout=60, interval=0.05)
