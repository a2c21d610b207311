"""RuntimeLauncher with a fake server module (tests/runtime/fake_imagen_runtime.py) in a real subprocess."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from imagen_addon.runtime.launcher import (
    ADDON_ROOT, TOKEN_ENV, LauncherError, RuntimeLauncher, parse_ready_line, pid_alive,
)

HERE = Path(__file__).resolve().parent


def make_launcher(tmp_path: Path, **kwargs) -> RuntimeLauncher:
    options = dict(module="fake_imagen_runtime", extra_paths=[str(HERE)], ready_timeout=30, stop_timeout=5)
    options.update(kwargs)
    return RuntimeLauncher(tmp_path / "state", python=sys.executable, **options)


def test_parse_ready_line():
    assert parse_ready_line('IMAGEN_RUNTIME_READY {"url": "http://127.0.0.1:5"}')["url"] == "http://127.0.0.1:5"
    assert parse_ready_line('IMAGEN_RUNTIME_READY {"port": 9}')["url"] == "http://127.0.0.1:9"
    assert parse_ready_line("INFO: Uvicorn running") is None
    assert parse_ready_line("IMAGEN_RUNTIME_READY not json") is None
    assert parse_ready_line("IMAGEN_RUNTIME_READY {}") is None


def test_command_and_environment(tmp_path):
    launcher = RuntimeLauncher(tmp_path, python="/usr/bin/python3", model_dir="/models/tiny", extra_paths=["/x"])
    cmd = launcher.command(tmp_path / "t")
    assert cmd[:3] == ["/usr/bin/python3", "-m", "imagen_addon.runtime.server"]
    assert cmd[3:] == ["--model", "/models/tiny", "--port", "0", "--token-file", str(tmp_path / "t")]
    env = launcher.environment("tok")
    assert env[TOKEN_ENV] == "tok"
    assert env["PYTHONPATH"].split(":")[:2] == [str(ADDON_ROOT), "/x"]
    assert (ADDON_ROOT / "imagen_addon" / "__init__.py").exists()


def test_start_reuse_stop(tmp_path):
    launcher = make_launcher(tmp_path)
    info = launcher.start()
    try:
        assert info.started_here and pid_alive(info.pid)
        assert info.client().health()["status"] == "ok"
        assert info.client().submit(prompt="x")  # the token reached the server
        assert (tmp_path / "state" / "runtime.token").stat().st_mode & 0o777 == 0o600
        # A second launcher (another Blender) reuses the recorded runtime instead of starting one.
        other = make_launcher(tmp_path)
        again = other.ensure_running()
        assert (again.url, again.pid, again.token) == (info.url, info.pid, info.token)
        assert not again.started_here and not other.owns_process
        assert other.stop() is False  # it did not start it, so it does not stop it
        assert pid_alive(info.pid)
    finally:
        assert launcher.stop() is True
    assert not pid_alive(info.pid)
    assert launcher.recorded() is None and launcher.running() is None


def test_stop_recorded_from_another_launcher(tmp_path):
    first = make_launcher(tmp_path)
    info = first.start()
    try:
        assert make_launcher(tmp_path).stop(include_recorded=True) is True
        deadline = time.monotonic() + 5
        while pid_alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(info.pid)
    finally:
        first.stop()


def test_server_that_exits_reports_its_output(tmp_path):
    launcher = make_launcher(tmp_path, module="imagen_addon.runtime.no_such_server")
    with pytest.raises(LauncherError, match="(?s)exited with code 1.*No module named"):
        launcher.start()
    assert not launcher.owns_process


def test_missing_interpreter(tmp_path):
    launcher = RuntimeLauncher(tmp_path, python=str(tmp_path / "nope" / "python"))
    with pytest.raises(LauncherError, match="interpreter not found"):
        launcher.start()


def test_missing_torch_gets_a_hint(tmp_path):
    fake_server = tmp_path / "pkg" / "no_torch_server.py"
    fake_server.parent.mkdir()
    fake_server.write_text("raise ModuleNotFoundError(\"No module named 'torch'\")\n")
    launcher = make_launcher(tmp_path, module="no_torch_server", extra_paths=[str(fake_server.parent)])
    with pytest.raises(LauncherError, match="has no 'torch'.*Python that has torch"):
        launcher.start()
