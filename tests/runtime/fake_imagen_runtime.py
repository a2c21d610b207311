"""A fake Imagen runtime (standard library only) that follows docs/runtime-api.md.

Used by the client tests and, in a thread inside Blender, by the add-on tests. Jobs advance one sampler step per
status poll and finish with a generated PNG (a seed-dependent gradient), so tests are fast and deterministic.
Knobs: `token`, `queue_max`, `steps`, `delay` (seconds before every answer, to provoke client timeouts),
`fail_with` (jobs fail with this error), `sr_factor` (upscale: output = init image size times this; 1 = a model
without a super-resolution stage). `requests` records (method, path, json body) of every call.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_png(width: int, height: int, seed: int = 0) -> bytes:
    """An RGB PNG: a gradient whose colours depend on `seed`."""
    r0, g0, b0 = (seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            row += bytes(((r0 + 255 * x // max(1, width - 1)) % 256, (g0 + 255 * y // max(1, height - 1)) % 256,
                          b0))
        rows.append(bytes(row))

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


def png_size(b64: str) -> tuple[int, int] | None:
    """(width, height) from the IHDR of a base64 PNG, or None for anything else."""
    if not isinstance(b64, str):
        return None
    try:
        head = base64.b64decode(b64[:64], validate=False)
    except ValueError:
        return None
    if not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


class FakeRuntime:
    def __init__(self, token: str | None = "test-token", queue_max: int = 4, steps: int = 3,
                 delay: float = 0.0, fail_with: str | None = None, native_size: int = 32, sr_factor: int = 2):
        self.token = token
        self.queue_max = queue_max
        self.steps = steps
        self.delay = delay
        self.fail_with = fail_with
        self.native_size = native_size
        self.sr_factor = sr_factor
        self.size_multiple = 8
        self.jobs: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeRuntime":
        fake = self

        class Handler(_Handler):
            runtime = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeRuntime":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stages(self) -> list[dict]:
        """The stages /v1/health reports: native_size is the last stage's size, as in the real runtime."""
        if self.sr_factor < 2:
            return [{"image_size": self.native_size, "kind": "base"}]
        return [{"image_size": self.native_size // self.sr_factor, "kind": "base"},
                {"image_size": self.native_size, "kind": "sr"}]

    # --- job logic --------------------------------------------------------------------------------------------

    def active_jobs(self) -> int:
        return sum(1 for job in self.jobs.values() if job["status"] in ("queued", "running"))

    def create_job(self, body: dict) -> tuple[int, dict]:
        mode = body.get("mode", "text2img")
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str) or len(prompt) > 1000:
            return 422, {"error": "prompt must be a string of at most 1000 characters"}
        if mode in ("text2img", "img2img", "inpaint") and not prompt.strip():
            return 422, {"error": f"prompt must not be empty for {mode}"}
        if mode in ("img2img", "inpaint", "upscale") and not body.get("init_image"):
            return 422, {"error": f"init_image is required for {mode}"}
        steps = body.get("steps", 25)
        if not isinstance(steps, int) or not 1 <= steps <= 250:
            return 422, {"error": "steps must be between 1 and 250"}
        if self.active_jobs() >= self.queue_max:
            return 429, {"error": f"queue is full ({self.queue_max} jobs); try again later"}
        seed = body.get("seed")
        seed = 1234 if seed is None else int(seed)
        height = body.get("height") or self.native_size
        width = body.get("width") or self.native_size
        if body.get("panorama"):
            width = 2 * height
        if mode == "upscale":
            size = png_size(body["init_image"])
            if size is None:
                return 422, {"error": "init_image is not a PNG image"}
            if self.sr_factor < 2:
                return 422, {"error": "mode: this model has no super-resolution stage, so it cannot upscale"}
            width, height = size[0] * self.sr_factor, size[1] * self.sr_factor
            if max(width, height) > 1024:
                return 422, {"error": f"init_image: upscaling {size[0]}x{size[1]} by {self.sr_factor} gives "
                                      f"{width}x{height}; send an image of at most {1024 // self.sr_factor} px"}
        job_id = f"job{len(self.jobs) + 1}"
        self.jobs[job_id] = {
            "id": job_id, "status": "queued", "position": self.active_jobs(), "progress": 0.0, "stage": 0,
            "stage_count": 1, "step": 0, "steps": self.steps, "preview": None, "error": None, "result": None,
            "_body": body, "_seed": seed, "_size": (int(width), int(height)),
        }
        return 202, {"id": job_id, "status": "queued", "position": self.jobs[job_id]["position"]}

    def advance(self, job: dict) -> None:
        if job["status"] not in ("queued", "running"):
            return
        job["status"], job["position"] = "running", None
        job["step"] += 1
        job["progress"] = job["step"] / job["steps"]
        width, height = job["_size"]
        job["preview"] = base64.b64encode(make_png(8, 8, job["_seed"])).decode("ascii")
        if job["step"] >= job["steps"]:
            if self.fail_with:
                job.update(status="failed", error=self.fail_with, progress=job["progress"])
                return
            settings = {k: v for k, v in job["_body"].items() if k not in ("init_image", "mask")}
            job.update(status="done", progress=1.0, result={
                "seed": job["_seed"], "width": width, "height": height, "file": f"{job['id']}.png",
                "settings": settings,
            })

    def public(self, job: dict) -> dict:
        return {k: v for k, v in job.items() if not k.startswith("_")}


class _Handler(BaseHTTPRequestHandler):
    runtime: FakeRuntime
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, payload: dict | bytes, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        return json.loads(self.rfile.read(length).decode("utf-8"))

    def _handle(self, method: str) -> None:
        fake = self.runtime
        body = self._body() if method == "POST" else None
        fake.requests.append((method, self.path, body))
        if fake.delay:
            time.sleep(fake.delay)
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if parts[:2] == ["v1", "health"] and method == "GET":
            return self._send(200, {
                "status": "ok", "version": "0.1.0", "api": 1,
                "model": {"path": "fake", "hash": "fake0000", "stages": fake.stages(),
                          "text_encoder": "fake", "native_size": [fake.native_size, fake.native_size],
                          "size_multiple": fake.size_multiple},
                "device": "cpu", "worker": "ok", "queue": {"length": fake.active_jobs(), "max": fake.queue_max},
            })
        if fake.token and self.headers.get("Authorization") != f"Bearer {fake.token}":
            return self._send(401, {"error": "missing or wrong token"})
        with fake.lock:
            if parts == ["v1", "jobs"] and method == "POST":
                code, payload = fake.create_job(body or {})
                return self._send(code, payload)
            if len(parts) >= 3 and parts[:2] == ["v1", "jobs"]:
                job = fake.jobs.get(parts[2])
                if job is None:
                    return self._send(404, {"error": f"no job with id {parts[2]!r}"})
                if len(parts) == 3 and method == "GET":
                    fake.advance(job)
                    return self._send(200, fake.public(job))
                if parts[3:] == ["cancel"] and method == "POST":
                    if job["status"] in ("queued", "running"):
                        job["status"] = "cancelled"
                    return self._send(200, fake.public(job))
                if parts[3:] == ["image"] and method == "GET":
                    if job["status"] != "done":
                        return self._send(409, {"error": f"job {job['id']} is {job['status']}, not done"})
                    width, height = job["_size"]
                    return self._send(200, make_png(width, height, job["_seed"]), "image/png")
        return self._send(404, {"error": f"no route {method} {self.path}"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


def main(argv: list[str] | None = None) -> None:
    """Stand-in for `python -m imagen_addon.runtime.server` (launcher tests): same flags, same READY line."""
    import argparse
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token-file", default="")
    args = parser.parse_args(argv)
    token = os.environ.get("IMAGEN_RUNTIME_TOKEN")
    if not token and args.token_file:
        with open(args.token_file, encoding="utf-8") as fh:
            token = fh.read().strip()
    with FakeRuntime(token=token) as runtime:
        print("fake runtime starting", flush=True)
        print("IMAGEN_RUNTIME_READY " + json.dumps({"url": runtime.url, "pid": os.getpid(), "model": args.model}),
              flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
