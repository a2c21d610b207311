"""Job records, the bounded FIFO queue and the single worker thread that owns the model.

Only the worker thread calls the model. HTTP handlers talk to `JobManager` (submit, get, cancel), which guards all
shared state with one lock. A result is written to the output folder (JSON sidecar first, then the PNG, each as
a temp file in the same folder renamed into place) before its job is reported `done`, so a reader never sees a
half-written file and every PNG has its sidecar.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

log = logging.getLogger(__name__)

PREVIEW_PX = 128
PREVIEW_INTERVAL_S = 0.5  # at most two preview encodings a second (plus one at the end of each stage)
RESULT_NAME = re.compile(r"^imagen-[0-9a-f]{32}\.(png|json)$")
TEMP_PREFIX, TEMP_SUFFIX = ".imagen-", ".tmp"


class QueueFull(Exception):
    """The queue holds `max_queue` jobs already."""


class WorkerDead(Exception):
    """The worker thread has stopped (shutdown, or an error outside any job)."""


@dataclass
class Job:
    """One request's record. Mutable fields change only under `JobManager._lock`."""

    settings: dict[str, Any]  # resolved, JSON-serialisable settings (no images)
    init_image: Image.Image | None = None
    mask: Image.Image | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "queued"
    stage: int = 0
    stage_count: int = 1
    step: int = 0
    steps: int = 0
    progress: float = 0.0
    preview: bytes | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    cancellable: bool = True  # False once the result is being written
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")


def run_model(model, job: Job, callback) -> Image.Image:
    """Call the model method that matches the job's mode and return the one resulting image."""
    s = job.settings
    common = dict(seed=s["seed"], steps=s["steps"], sampler=s["sampler"], guidance_scale=s["guidance_scale"])
    if s["mode"] == "upscale":
        return model.upscale(job.init_image, s["prompt"], callback=callback, tiling=s["tiling"], **common)
    kwargs = dict(common, negative_prompt=s["negative_prompt"] or None, size=(s["width"], s["height"]))
    kwargs["tiling"] = s["tiling"]
    if s["mode"] in ("img2img", "inpaint"):
        kwargs.update(init_image=job.init_image, strength=s["strength"])
    if s["mode"] == "inpaint":
        kwargs["mask"] = job.mask
    return model.generate(s["prompt"], callback=callback, **kwargs)[0]


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(output_dir: Path, job_id: str, image: Image.Image, settings: dict, model_hash: str) -> str:
    """Write `imagen-<id>.json` then `imagen-<id>.png` (metadata in PNG text chunks); return the PNG's name."""
    name = f"imagen-{job_id}"
    meta = {"prompt": settings["prompt"], "negative_prompt": settings["negative_prompt"], "seed": settings["seed"]}
    info = PngInfo()
    for key, value in meta.items():
        info.add_text(key, str(value))
    info.add_text("settings", json.dumps(settings, sort_keys=True))
    info.add_text("model_hash", model_hash)
    info.add_text("software", "Imagen for Blender")
    png = io.BytesIO()
    image.save(png, format="PNG", pnginfo=info)
    sidecar = {"id": job_id, "file": f"{name}.png", "width": image.width, "height": image.height,
               "model_hash": model_hash, "settings": settings, "created": time.time()}
    sidecar_path = output_dir / f"{name}.json"
    _atomic_write(sidecar_path, json.dumps(sidecar, indent=2, sort_keys=True).encode("utf-8"))
    try:
        _atomic_write(output_dir / f"{name}.png", png.getvalue())
    except BaseException:
        sidecar_path.unlink(missing_ok=True)  # no sidecar without its PNG
        raise
    return f"{name}.png"


def clean_output_dir(output_dir: Path) -> None:
    """Remove what a killed runtime may have left: temp files and result files missing their partner."""
    for path in output_dir.iterdir():
        if path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX):
            path.unlink(missing_ok=True)
        elif RESULT_NAME.match(path.name):
            partner = path.with_suffix(".json" if path.suffix == ".png" else ".png")
            if not partner.exists():
                path.unlink(missing_ok=True)


def encode_preview(image: Image.Image) -> bytes:
    image = image.convert("RGB")
    image.thumbnail((PREVIEW_PX, PREVIEW_PX))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class JobManager:
    """FIFO queue of at most `max_queue` waiting jobs, run one at a time by a single worker thread."""

    def __init__(self, model, output_dir: Path, *, max_queue: int, model_hash: str, keep_finished: int = 500):
        self.model = model
        self.output_dir = Path(output_dir)
        self.max_queue = max_queue
        self.model_hash = model_hash
        self.keep_finished = keep_finished
        self._lock = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}  # insertion ordered: oldest first
        self._running: Job | None = None
        self._stopping = False
        self._worker_status = "ok"
        self._dead: str | None = None
        self._thread = threading.Thread(target=self._work, name="imagen-worker", daemon=True)

    def start(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        clean_output_dir(self.output_dir)
        self._thread.start()

    # ---- called from HTTP handlers -------------------------------------------------------------------------
    def submit(self, job: Job) -> dict:
        with self._lock:
            if self._dead or self._stopping:
                raise WorkerDead(self._dead or "the runtime is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"queue is full ({self.max_queue} jobs); try again later")
            self._queue.append(job)
            self._jobs[job.id] = job
            self._lock.notify_all()
            return self._snapshot(job)

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else self._snapshot(job)

    def result_path(self, job_id: str) -> tuple[str | None, Path | None]:
        """(status, path of the PNG if done) of a job; (None, None) for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None, None
            path = self.output_dir / job.result["file"] if job.status == "done" else None
            return job.status, path

    def cancel(self, job_id: str) -> dict | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status == "queued":
                self._queue.remove(job)
                self._finish(job, "cancelled")
            elif job.status == "running" and job.cancellable:
                job.cancel.set()  # the worker's next progress callback returns False
            return self._snapshot(job)

    def health(self) -> dict:
        with self._lock:
            worker = f"dead: {self._dead}" if self._dead else self._worker_status
            return {"worker": worker, "queue": {"length": len(self._queue), "max": self.max_queue}}

    def close(self, timeout: float | None = 120.0) -> None:
        """Cancel queued and running jobs and wait for the worker to stop (files stay consistent)."""
        with self._lock:
            self._stopping = True
            while self._queue:
                self._finish(self._queue.popleft(), "cancelled", error="the runtime shut down")
            if self._running is not None and self._running.cancellable:
                self._running.cancel.set()
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- internals (lock held) -----------------------------------------------------------------------------
    def _snapshot(self, job: Job) -> dict:
        position = self._queue.index(job) if job.status == "queued" else None
        return {"id": job.id, "status": job.status, "position": position, "progress": job.progress,
                "stage": job.stage, "stage_count": job.stage_count, "step": job.step, "steps": job.steps,
                "preview": job.preview, "error": job.error, "result": job.result}

    def _finish(self, job: Job, status: str, *, error: str | None = None, result: dict | None = None) -> None:
        job.status, job.error, job.result = status, error, result
        job.preview = job.init_image = job.mask = None  # free memory; finished jobs keep only their record
        if status == "done":
            job.progress = 1.0
        finished = [j for j in self._jobs.values() if j.finished]
        for old in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[old.id]

    # ---- the worker thread ---------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._queue and not self._stopping:
                        self._lock.wait()
                    if self._stopping:
                        return
                    job = self._running = self._queue.popleft()
                    job.status = "running"
                self._run(job)
                with self._lock:
                    self._running = None
        except BaseException as exc:  # a bug outside any job: report it, never die silently
            log.exception("imagen worker stopped")
            with self._lock:
                self._dead = f"{type(exc).__name__}: {exc}"
                if self._running is not None and not self._running.finished:
                    self._finish(self._running, "failed", error=f"worker stopped: {self._dead}")

    def _run(self, job: Job) -> None:
        try:
            image = run_model(self.model, job, self._callback(job))
        except Exception as exc:  # Cancelled, or a model error (MemoryError, CUDA OOM, ...)
            with self._lock:
                if job.cancel.is_set():
                    self._finish(job, "cancelled", error=None if not self._stopping else "the runtime shut down")
                    return
                message = f"{type(exc).__name__}: {exc}"
                log.error("job %s failed: %s", job.id, message, exc_info=exc)
                self._worker_status = f"crashed: {message}"
                self._finish(job, "failed", error=message)
            return
        with self._lock:
            if job.cancel.is_set():
                self._finish(job, "cancelled")
                return
            job.cancellable = False
        settings = job.settings
        try:
            name = write_result(self.output_dir, job.id, image, settings, self.model_hash)
        except Exception as exc:
            with self._lock:
                self._finish(job, "failed", error=f"could not write the result to {self.output_dir}: {exc}")
            return
        result = {"seed": settings["seed"], "width": image.width, "height": image.height, "file": name,
                  "settings": settings}
        with self._lock:
            self._worker_status = "ok"
            self._finish(job, "done", result=result)
        log.info("job %s done: %s", job.id, name)

    def _callback(self, job: Job):
        last_preview = [0.0]

        def callback(p) -> bool:
            if job.cancel.is_set():
                return False
            with self._lock:
                job.stage, job.stage_count, job.step, job.steps = p.stage, p.stage_count, p.step, p.steps
                job.progress = min(1.0, max(0.0, (p.stage + p.step / max(p.steps, 1)) / max(p.stage_count, 1)))
            now = time.monotonic()
            if now - last_preview[0] >= PREVIEW_INTERVAL_S or p.step == p.steps:
                last_preview[0] = now
                try:
                    preview = encode_preview(p.preview())
                except Exception:  # a preview is a nicety; never fail a job for it
                    log.debug("preview failed", exc_info=True)
                else:
                    with self._lock:
                        job.preview = preview
            return not job.cancel.is_set()

        return callback
