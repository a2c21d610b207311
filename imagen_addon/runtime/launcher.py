"""Start, find and stop a local Imagen runtime process. Standard library only: Blender imports this file.

The runtime runs as `python -m imagen_addon.runtime.server --model DIR --port 0 --token-file FILE` in its own
process (Blender never imports torch). Its stdout/stderr go to `runtime.log` in the state folder; the server prints
one line `IMAGEN_RUNTIME_READY {"url": ...}` when it listens, which is how we learn the port. The URL, pid and token
are recorded in `runtime.json` so a second Blender (or the next session) reuses a runtime that is already up.
A runtime this process started is stopped by `stop()`, at interpreter exit (atexit) and by the add-on's
unregister(): terminate, then kill after a timeout.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .client import RuntimeClient, RuntimeClientError

READY_PREFIX = "IMAGEN_RUNTIME_READY"
TOKEN_ENV = "IMAGEN_RUNTIME_TOKEN"
SERVER_MODULE = "imagen_addon.runtime.server"
ADDON_ROOT = Path(__file__).resolve().parents[2]  # the folder that contains the `imagen_addon` package
BUNDLED_MODEL = ADDON_ROOT / "imagen_addon" / "weights" / "default"  # what Imagen.from_pretrained() loads


class LauncherError(Exception):
    """The runtime could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class RuntimeInfo:
    url: str
    token: str
    pid: int
    python: str = ""
    model: str = ""
    started_here: bool = False  # started by this process (so this process must stop it)

    def client(self, timeout: float = 30.0) -> RuntimeClient:
        return RuntimeClient(self.url, self.token, timeout=timeout)


def parse_ready_line(line: str) -> dict | None:
    """`IMAGEN_RUNTIME_READY {"url": ...}` -> the JSON dict with a `url` (built from host/port when absent)."""
    line = line.strip()
    if not line.startswith(READY_PREFIX):
        return None
    try:
        info = json.loads(line[len(READY_PREFIX):].strip() or "{}")
    except json.JSONDecodeError:
        return None
    if not isinstance(info, dict):
        return None
    if not info.get("url") and info.get("port"):
        info["url"] = f"http://{info.get('host') or '127.0.0.1'}:{int(info['port'])}"
    return info if info.get("url") else None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = getattr(ctypes, "windll").kernel32  # Windows only (getattr keeps type checkers quiet elsewhere)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


class RuntimeLauncher:
    """Manages the one local runtime recorded in `state_dir`.

    python: interpreter that has torch (default: this one). model_dir: model folder ("" = bundled weights when
    present, else the server's default). extra_paths: prepended to PYTHONPATH after the add-on folder (e.g. the
    site-packages holding the extension's wheels). module: the server module (tests use a fake).
    """

    def __init__(self, state_dir: str | os.PathLike, python: str = "", model_dir: str = "",
                 extra_args: Sequence[str] = (), extra_paths: Sequence[str] = (), module: str = SERVER_MODULE,
                 ready_timeout: float = 600.0, stop_timeout: float = 10.0):
        self.state_dir = Path(state_dir)
        self.python = python or sys.executable
        self.model_dir = model_dir
        self.extra_args = list(extra_args)
        self.extra_paths = [str(p) for p in extra_paths]
        self.module = module
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen | None = None
        self._atexit_registered = False
        self._lock = threading.Lock()  # start() vs close(): a closed launcher never starts a process
        self._closed = False

    # --- files ------------------------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "runtime.json"

    @property
    def token_file(self) -> Path:
        return self.state_dir / "runtime.token"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "runtime.log"

    def model_path(self) -> str:
        if self.model_dir:
            return str(Path(self.model_dir).expanduser())
        return str(BUNDLED_MODEL) if (BUNDLED_MODEL / "imagen.json").is_file() else ""

    def recorded(self) -> RuntimeInfo | None:
        """The runtime recorded in the state file, if any (alive or not)."""
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            return RuntimeInfo(url=data["url"], token=data["token"], pid=int(data["pid"]),
                               python=data.get("python", ""), model=data.get("model", ""))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_private(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)

    # --- queries ----------------------------------------------------------------------------------------------

    def running(self) -> RuntimeInfo | None:
        """The recorded runtime when its process is alive and it answers health; else None."""
        info = self.recorded()
        if info is None or not pid_alive(info.pid):
            return None
        try:
            info.client(timeout=3.0).health()
        except RuntimeClientError:
            return None
        started_here = self._process is not None and self._process.pid == info.pid
        return RuntimeInfo(**{**asdict(info), "started_here": started_here})

    @property
    def owns_process(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, token_file: Path) -> list[str]:
        cmd = [self.python, "-m", self.module]
        if self.model_path():
            cmd += ["--model", self.model_path()]
        return cmd + ["--port", "0", "--token-file", str(token_file), *self.extra_args]

    def environment(self, token: str) -> dict[str, str]:
        env = dict(os.environ)
        paths = [str(ADDON_ROOT), *self.extra_paths]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env[TOKEN_ENV] = token
        env["PYTHONUNBUFFERED"] = "1"
        return env

    # --- actions ----------------------------------------------------------------------------------------------

    def ensure_running(self) -> RuntimeInfo:
        """Reuse the recorded runtime when it is up with the same interpreter and model, else start one."""
        info = self.running()
        if info is not None and info.python == self.python and info.model == self.model_path():
            return info
        if info is not None:  # ours (recorded), but for another interpreter/model: replace it
            self.stop()
        return self.start()

    def start(self) -> RuntimeInfo:
        """Start a runtime and wait until it prints its READY line and answers health."""
        if self.owns_process:
            self.stop()
        if not Path(self.python).exists():
            raise LauncherError(f"Python interpreter not found: {self.python}. Set one that has torch installed "
                                "in the add-on preferences.")
        token = secrets.token_urlsafe(24)
        with self._lock:
            if self._closed:
                raise LauncherError("The Imagen extension was disabled, so no runtime is started")
            self._write_private(self.token_file, token)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_file, "w", encoding="utf-8")  # noqa: SIM115 (the child keeps writing to it)
            try:
                self._process = subprocess.Popen(
                    self.command(self.token_file), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=self.environment(token), cwd=str(self.state_dir),
                    creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
                )
            except OSError as err:
                raise LauncherError(f"Could not start {self.python}: {err}") from None
            finally:
                log.close()
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            ready = self._wait_ready()
            token = self._read_token(token)
            info = RuntimeInfo(url=ready["url"], token=token, pid=self._process.pid, python=self.python,
                               model=self.model_path(), started_here=True)
            self._wait_health(info)
        except BaseException:
            self.stop()
            raise
        record = {k: v for k, v in asdict(info).items() if k != "started_here"}
        self._write_private(self.state_file, json.dumps({**record, "started": time.time()}, indent=2))
        return info

    def _read_token(self, fallback: str) -> str:
        try:  # a server may write its own token; the file is the truth
            return self.token_file.read_text(encoding="utf-8").strip() or fallback
        except OSError:
            return fallback

    def _wait_ready(self) -> dict:
        process = self._process
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if process is None or self._process is not process:
                raise LauncherError("The runtime was stopped while it was starting")
            for line in self.log_tail(10_000).splitlines():
                ready = parse_ready_line(line)
                if ready:
                    return ready
            if process.poll() is not None:
                raise LauncherError(self._exit_message(process.returncode))
            time.sleep(0.1)
        raise LauncherError(f"The runtime did not report ready within {self.ready_timeout:g} s. Last output:\n"
                            f"{self.log_tail()}")

    def _exit_message(self, code: int | None) -> str:
        tail = self.log_tail()
        missing = re.search(r"No module named '?([\w.]+)'?", tail)
        if missing and missing.group(1).split(".")[0] in ("torch", "numpy", "fastapi", "uvicorn", "pydantic",
                                                          "safetensors", "transformers", "PIL"):
            return (f"The Python at {self.python} cannot run the model: it has no '{missing.group(1)}'. Set a "
                    f"Python that has torch installed in the add-on preferences (or install the full build).")
        return f"The runtime exited with code {code} before it was ready. Last output:\n{tail}"

    def _wait_health(self, info: RuntimeInfo, attempts: int = 50) -> None:
        for _ in range(attempts):
            try:
                info.client(timeout=5.0).health()
                return
            except RuntimeClientError as err:
                last = err
                time.sleep(0.1)
        raise LauncherError(f"The runtime reported ready at {info.url} but does not answer: {last}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - chars))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the runtime this launcher started and never start another: the add-on is being disabled (or
        Blender quits) while a generation thread may still be on its way to start one."""
        with self._lock:
            self._closed = True
        self.stop()

    def stop(self, include_recorded: bool = False) -> bool:
        """Stop the runtime this process started (and, with include_recorded, the one in the state file).

        Returns True when a process was stopped. Never raises for an already-gone process.
        """
        stopped = False
        if self._process is not None:
            process, self._process = self._process, None
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(self.stop_timeout)
                stopped = True
            self._forget(process.pid)
        if include_recorded:
            info = self.recorded()
            if info is not None and pid_alive(info.pid) and self.running() is not None:
                stopped = self._stop_pid(info.pid) or stopped
            if info is not None:
                self._forget(info.pid)
        return stopped

    def _stop_pid(self, pid: int) -> bool:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return False
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
        if os.name != "nt":
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return True

    def _forget(self, pid: int) -> None:
        info = self.recorded()
        if info is not None and info.pid == pid:
            for path in (self.state_file, self.token_file):
                try:
                    path.unlink()
                except OSError:
                    pass
