"""`imagen serve`: the runtime's HTTP API (FastAPI app factory) and its command line entry point.

The contract is docs/runtime-api.md. The app never answers 5xx for any input: requests are validated by
`schemas.py` (422 with a readable `error`), auth failures are 401, a full queue is 429; a 500 handler exists only
as a last resort and tests assert it is never reached. Run with `python -m imagen_addon.runtime.server --help`.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from .. import __version__
from .jobs import Job, JobManager, QueueFull, WorkerDead
from .schemas import (MAX_IMAGE_B64_CHARS, BadImage, ErrorResponse, Health, JobCreated, JobRequest, JobState,
                      decode_image, format_validation_errors, resolve_settings, upscale_size)

log = logging.getLogger(__name__)

API_VERSION = 1
TOKEN_ENV = "IMAGEN_RUNTIME_TOKEN"
READY_PREFIX = "IMAGEN_RUNTIME_READY"
MAX_BODY_BYTES = 2 * MAX_IMAGE_B64_CHARS + 64 * 1024  # two images plus the other fields
ENV_TOKEN_RE = re.compile(r"[\x21-\x7e]{16,512}")  # printable ASCII, no spaces


def _errors(*codes: int) -> dict:
    return {code: {"model": ErrorResponse} for code in codes}


MISSING_TOKEN = ("missing token: send the header 'Authorization: Bearer <token>' with the token from the runtime's "
                 "token file")
WRONG_TOKEN = "wrong token: use the token this runtime wrote to its token file"
ANONYMOUS_MAX_BODY_BYTES = 64 * 1024  # what a request without the right token may make the server read


def bearer_matches(header: bytes | None, expected: bytes) -> bool:
    """Whether an Authorization header value is `Bearer <expected>` (scheme case-insensitive, constant time)."""
    scheme, _, credentials = (header or b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), expected)


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` (413) before they are read into memory. A request
    without the right token is refused (401) once its body passes ANONYMOUS_MAX_BODY_BYTES, so nobody without the
    token can make the runtime read and parse megabytes of JSON (which can take a GB of memory)."""

    def __init__(self, app, max_bytes: int, token: str):
        self.app, self.max_bytes, self.token = app, max_bytes, token.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        if bearer_matches(headers.get(b"authorization"), self.token):
            limit, status, message = self.max_bytes, 413, f"request body too large: at most {self.max_bytes >> 20} MB"
        else:
            limit, status = ANONYMOUS_MAX_BODY_BYTES, 401
            message = WRONG_TOKEN if b"authorization" in headers else MISSING_TOKEN
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            refusal = JSONResponse({"error": message if length.isdigit() else "bad Content-Length header"},
                                   status_code=status if length.isdigit() else 400, headers=extra)
            return await refusal(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            event = await receive()
            seen += len(event.get("body", b""))
            if seen > limit:
                raise HTTPException(status, message, headers=extra)  # FastAPI passes it through to the handlers
            return event

        await self.app(scope, limited_receive, send)


def create_app(jobs: JobManager, *, token: str, model_info: dict, model_path: str, device: str) -> FastAPI:
    """The runtime's ASGI app. `jobs` must be started; the caller closes it."""
    app = FastAPI(title="Imagen runtime", version=__version__, docs_url=None, redoc_url=None,
                  description="Local Imagen text-to-image runtime. Contract: docs/runtime-api.md")
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, token=token)
    expected = token.encode("utf-8")
    bearer = HTTPBearer(auto_error=False, description="the runtime token (token file or IMAGEN_RUNTIME_TOKEN)")

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None:
            raise HTTPException(401, MISSING_TOKEN, headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode("utf-8"), expected):
            raise HTTPException(401, WRONG_TOKEN, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}; see /openapi.json"
        elif exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = "the request body could not be read: send a UTF-8 encoded JSON object"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"method {request.method} is not allowed on {request.url.path}; see /openapi.json"
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": format_validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):  # last resort; tests assert it never runs
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); please report this bug"},
                            status_code=500)

    model = {"path": model_path, "hash": model_info["model_hash"], "stages": model_info["stages"],
             "text_encoder": model_info["text_encoder"], "native_size": list(model_info["native_size"]),
             "size_multiple": model_info["size_multiple"]}

    @app.get("/v1/health", response_model=Health, tags=["runtime"])
    def health() -> dict:
        state = jobs.health()
        status = "ok" if state["worker"] == "ok" else "degraded"
        return {"status": status, "version": __version__, "api": API_VERSION, "model": model, "device": device,
                **state}

    router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], tags=["jobs"],
                       responses=_errors(401, 422))

    def job_state(snapshot: dict | None) -> dict:
        if snapshot is None:
            raise HTTPException(404, "no such job (unknown id, or finished long ago and forgotten)")
        preview = snapshot["preview"]
        return {**snapshot, "preview": base64.b64encode(preview).decode("ascii") if preview else None}

    @router.post("/jobs", status_code=202, response_model=JobCreated, responses=_errors(400, 413, 429, 503))
    def create_job(req: JobRequest) -> dict:
        try:
            settings = resolve_settings(req, model_info)
            init = decode_image(req.init_image, "init_image", "RGB") if req.init_image else None
            mask = decode_image(req.mask, "mask", "L") if req.mask else None
            if req.mode == "upscale":
                settings["width"], settings["height"] = upscale_size(init.size, model_info)
        except (ValueError, BadImage) as exc:
            raise HTTPException(422, str(exc)) from None
        if init is not None and mask is not None and init.size != mask.size:
            raise HTTPException(422, f"mask is {mask.width}x{mask.height} but init_image is "
                                     f"{init.width}x{init.height}; they must be the same size")
        try:
            snapshot = jobs.submit(Job(settings, init_image=init, mask=mask))
        except QueueFull as exc:
            raise HTTPException(429, str(exc)) from None
        except WorkerDead as exc:
            raise HTTPException(503, f"the worker is not running ({exc}); restart the runtime") from None
        return {"id": snapshot["id"], "status": snapshot["status"], "position": snapshot["position"]}

    @router.get("/jobs/{job_id}", response_model=JobState, responses=_errors(404))
    def get_job(job_id: str) -> dict:
        return job_state(jobs.get(job_id))

    @router.post("/jobs/{job_id}/cancel", response_model=JobState, responses=_errors(404))
    def cancel_job(job_id: str) -> dict:
        return job_state(jobs.cancel(job_id))

    @router.get("/jobs/{job_id}/image", response_class=Response, responses={
        200: {"content": {"image/png": {}}, "description": "the finished PNG"}, **_errors(404, 409, 410)})
    def get_image(job_id: str) -> Response:
        status, path = jobs.result_path(job_id)
        if status is None:
            raise HTTPException(404, "no such job (unknown id, or finished long ago and forgotten)")
        if path is None:
            raise HTTPException(409, f"job is {status}; the image exists only once the job is done")
        try:
            return Response(path.read_bytes(), media_type="image/png")
        except OSError:
            raise HTTPException(410, f"the result file {path.name} was removed from the output folder") from None

    app.include_router(router)
    return app


# ---- command line -------------------------------------------------------------------------------------------
def default_output_dir() -> Path:
    base = os.environ.get("LOCALAPPDATA") if os.name == "nt" else os.environ.get("XDG_DATA_HOME")
    return Path(base or Path.home() / ".local" / "share") / "imagen" / "outputs"


def load_model(path: str | None, device: str):
    """The real model (imports torch); tests and embedders may pass another loader to `cli_main`."""
    from imagen_addon.core.imagen import Imagen

    return Imagen.from_pretrained(path, device=device)


def resolve_device(choice: str) -> str:
    import torch

    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available; use --device cpu or auto")
    return "cuda:0"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_token_file(path: Path, token: str) -> None:
    """Create `path` holding `token`, readable by this user only: a 0600 temp file (O_EXCL) renamed into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def bind_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.set_inheritable(True)
    return sock


def parse_args(argv):
    p = argparse.ArgumentParser(prog="imagen serve", description="Run the local Imagen HTTP runtime.")
    p.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    p.add_argument("--token-file", type=Path, default=None, help="where to write the generated token (0600)")
    p.add_argument("--output", type=Path, default=None, help=f"result folder (default {default_output_dir()})")
    p.add_argument("--queue-size", type=int, default=8, help="max queued jobs (default 8)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (needs env token)")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error("--port must be between 0 and 65535")
    if not 1 <= args.queue_size <= 1000:
        p.error("--queue-size must be between 1 and 1000")
    return args


def _check_security(args, env_token: str | None) -> str | None:
    """An error message if the host/token combination is unsafe, else None."""
    if env_token is not None and not ENV_TOKEN_RE.fullmatch(env_token):
        return f"{TOKEN_ENV} must be 16 to 512 printable ASCII characters without spaces"
    if not is_loopback(args.host):
        if not args.allow_remote:
            return (f"--host {args.host} is reachable from other machines; pass --allow-remote and set "
                    f"{TOKEN_ENV} to a strong token to do that, or use --host 127.0.0.1")
        if env_token is None:
            return f"--allow-remote needs the token from the environment: set {TOKEN_ENV}"
    return None


def cli_main(argv=None, *, load_model=load_model) -> int:
    """`imagen serve`: load the model, start the worker, serve until SIGTERM/SIGINT. Returns the exit code."""
    args = parse_args(argv)
    env_token = os.environ.get(TOKEN_ENV)
    problem = _check_security(args, env_token)
    if problem:
        print(f"imagen serve: error: {problem}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        sock = bind_socket(args.host, args.port)
    except (ValueError, OSError) as exc:
        print(f"imagen serve: error: {exc}", file=sys.stderr)
        return 2
    output = (args.output or default_output_dir()).expanduser().resolve()
    try:
        output.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output).close()  # writable?
    except OSError as exc:
        print(f"imagen serve: error: cannot write to the output folder {output}: {exc}", file=sys.stderr)
        sock.close()
        return 2
    try:
        model = load_model(args.model, device)
        model_info = model.info()
    except Exception as exc:
        print(f"imagen serve: error: could not load the model: {type(exc).__name__}: {exc}", file=sys.stderr)
        sock.close()
        return 1
    token, token_file, token_dir = env_token, None, None
    if token is None:
        token = secrets.token_urlsafe(32)
        if args.token_file is None:
            token_dir = Path(tempfile.mkdtemp(prefix="imagen-runtime-"))  # 0700
        token_file = (args.token_file or token_dir / "token").expanduser().resolve()
        try:
            write_token_file(token_file, token)
        except OSError as exc:
            print(f"imagen serve: error: cannot write the token file {token_file}: {exc}", file=sys.stderr)
            sock.close()
            return 2
    jobs = JobManager(model, output, max_queue=args.queue_size, model_hash=model_info["model_hash"])
    jobs.start()
    app = create_app(jobs, token=token, model_info=model_info, model_path=args.model or "bundled", device=device)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    ready = {"url": f"http://{host}:{port}", "token_file": str(token_file) if token_file else None,
             "output": str(output), "pid": os.getpid()}
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = _ReadyServer(config, on_ready=lambda: print(f"{READY_PREFIX} {json.dumps(ready)}", flush=True))
    restore = _note_signals()
    try:
        server.run(sockets=[sock])
    finally:
        jobs.close()
        restore()
        if token_file is not None:
            token_file.unlink(missing_ok=True)
        if token_dir is not None:
            shutil.rmtree(token_dir, ignore_errors=True)
    return 0


class _ReadyServer(uvicorn.Server):
    """uvicorn.Server that calls `on_ready` once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_ready):
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._on_ready()


def _note_signals():
    """uvicorn handles SIGINT/SIGTERM itself, then re-raises the signal once it has shut down; these handlers
    make that re-raise harmless so `cli_main` can finish cleanly (cancel the job, remove the token file)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(cli_main())
