"""Network side of the add-on (imagen_addon/blender/worker.py) against the fake runtime: plain pytest, no bpy."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from fake_imagen_runtime import FakeRuntime  # noqa: E402

from imagen_addon.blender.logic import RuntimeConfig  # noqa: E402
from imagen_addon.blender.worker import CancelToken, TaskRunner, connect, run_job_sync  # noqa: E402
from imagen_addon.runtime.client import RuntimeClient, RuntimeClientError  # noqa: E402


@pytest.fixture
def fake():
    with FakeRuntime(token="tok", steps=2) as runtime:
        yield runtime


def test_run_job_sync(fake):
    seen = []
    result = run_job_sync(RuntimeClient(fake.url, "tok"), {"prompt": "x", "seed": 3, "width": 16, "height": 8},
                          on_progress=seen.append, poll=0.001)
    assert result.png.startswith(b"\x89PNG") and result.result["seed"] == 3
    assert [s["status"] for s in seen] == ["running", "done"]


def test_run_job_sync_cancel_before_id_is_known(fake):
    fake.steps = 1000
    token = CancelToken()
    token.set()  # pressed Cancel while the request was on its way
    with pytest.raises(RuntimeClientError) as info:
        run_job_sync(RuntimeClient(fake.url, "tok"), {"prompt": "x"}, poll=0.001, cancel=token)
    assert info.value.kind == "cancelled"


def test_connect_remote(fake):
    client = connect(RuntimeConfig(mode="REMOTE", url=fake.url, token="tok"))
    assert client.health()["status"] == "ok"
    with pytest.raises(RuntimeClientError, match="Online access is disabled"):
        connect(RuntimeConfig(mode="REMOTE", url="http://192.0.2.1:8000", online_access=False))
    assert connect(RuntimeConfig(mode="REMOTE", url="http://192.0.2.1:8000", online_access=True)).url


def test_connect_local_without_autostart(tmp_path):
    config = RuntimeConfig(mode="LOCAL", state_dir=str(tmp_path), python=sys.executable, auto_start=False)
    with pytest.raises(RuntimeClientError, match="press Start Runtime") as info:
        connect(config)
    assert info.value.kind == "connection"


def test_task_runner_delivers_on_the_draining_thread():
    runner = TaskRunner()
    events, main = [], threading.get_ident()

    def work(emit, cancel):
        for i in range(3):
            emit(i)
        return "value"

    runner.start(work, on_done=lambda v: events.append(("done", v, threading.get_ident())),
                 on_error=lambda e: events.append(("error", e)),
                 on_progress=lambda p: events.append(("progress", p, threading.get_ident())))
    assert runner.busy
    with pytest.raises(RuntimeError):
        runner.start(work, on_done=print, on_error=print)
    deadline = time.monotonic() + 5
    while runner.drain() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [e[:2] for e in events] == [("progress", 0), ("progress", 1), ("progress", 2), ("done", "value")]
    assert all(e[2] == main for e in events)
    assert not runner.busy


def test_task_runner_errors_and_abandon():
    runner = TaskRunner()
    errors = []
    runner.start(lambda emit, cancel: 1 / 0, on_done=print, on_error=errors.append)
    deadline = time.monotonic() + 5
    while runner.drain() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(errors[0], ZeroDivisionError)

    release = threading.Event()
    done = []
    runner.start(lambda emit, cancel: release.wait(5), on_done=done.append, on_error=done.append)
    runner.abandon()
    release.set()
    time.sleep(0.05)
    assert runner.drain() is False and done == []  # events of an abandoned task are dropped
