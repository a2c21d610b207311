"""`python -m reliability_serve [imagen serve options]`: the real runtime (`cli_main`: uvicorn, JobManager, result
files) around the fake model of tests/runtime/conftest.py, so fault, fuzz and load runs need no torch.

The RuntimeLauncher can start it too (module="reliability_serve" with this folder on PYTHONPATH). Environment:
    IMAGEN_FAKE_STEP_DELAY   seconds each fake sampler step takes (default 0)
    IMAGEN_FAKE_LOG          a folder: `accepted.log` gets the prompt of each job as the server accepts it (under the
                             queue lock), `started.log` as the model starts it; one line each, so FIFO order can be
                             checked from outside the process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_runtime_fakes():
    """tests/runtime/conftest.py as a plain module (FakeImagen, AUTH, TOKEN, png_b64, wait_for)."""
    name = "imagen_runtime_fakes"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE.parent / "runtime" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _append(log_dir: str | None, name: str, line: str) -> None:
    if log_dir:
        with open(os.path.join(log_dir, name), "a", encoding="utf-8") as fh:
            fh.write(line.replace("\n", " ") + "\n")


def logging_model(step_delay: float, log_dir: str | None):
    """A FakeImagen that logs the prompt of every job it starts."""
    fakes = load_runtime_fakes()

    class LoggingImagen(fakes.FakeImagen):
        def generate(self, prompts, **kwargs):
            _append(log_dir, "started.log", prompts)
            return super().generate(prompts, **kwargs)

        def upscale(self, image, prompt="", **kwargs):
            _append(log_dir, "started.log", prompt)
            return super().upscale(image, prompt, **kwargs)

    return LoggingImagen(step_delay=step_delay)


def logging_job_manager(log_dir: str | None):
    """JobManager whose submit() logs each accepted job's prompt while it still holds the queue lock."""
    from imagen_addon.runtime.jobs import JobManager

    class LoggingJobManager(JobManager):
        def submit(self, job):
            with self._lock:  # a Condition over an RLock: submit() takes it again inside
                snapshot = super().submit(job)
                _append(log_dir, "accepted.log", job.settings["prompt"])
                return snapshot

    return LoggingJobManager


def main(argv: list[str] | None = None) -> int:
    from imagen_addon.runtime import server

    log_dir = os.environ.get("IMAGEN_FAKE_LOG")
    step_delay = float(os.environ.get("IMAGEN_FAKE_STEP_DELAY") or 0)
    server.JobManager = logging_job_manager(log_dir)
    args = list(sys.argv[1:] if argv is None else argv)
    if "--device" not in args:
        args += ["--device", "cpu"]
    return server.cli_main(args, load_model=lambda path, device: logging_model(step_delay, log_dir))


if __name__ == "__main__":
    sys.exit(main())
