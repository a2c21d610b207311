"""HTTP client for the Imagen runtime (docs/runtime-api.md). Standard library only: Blender imports this file.

Every failure becomes one exception type, `RuntimeClientError`, whose message a person can act on ("The Imagen
runtime is not running at ...", "wrong token", "queue is full", the server's own `error` text). Each call opens
its own connection, so one client may be shared by a worker thread (polling) and the UI thread (cancel).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

API_PREFIX = "/v1"
JOB_FIELDS = frozenset(
    {
        "mode", "prompt", "negative_prompt", "seed", "steps", "sampler", "guidance_scale", "width", "height",
        "tiling", "panorama", "init_image", "mask", "strength",
    }
)
FINAL_STATES = ("done", "failed", "cancelled")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class RuntimeClientError(Exception):
    """A runtime call failed. `str(err)` is the message to show; `kind` and `status` are for code.

    kind: "connection" | "timeout" | "auth" | "queue_full" | "not_found" | "request" | "server" | "protocol"
          | "job_failed" | "cancelled"
    status: the HTTP status code, or None when no HTTP answer came back.
    """

    def __init__(self, message: str, *, kind: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status


def normalize_url(url: str) -> str:
    """'127.0.0.1:8000/' -> 'http://127.0.0.1:8000'. Raises RuntimeClientError for an unusable URL."""
    text = (url or "").strip()
    if not text:
        raise RuntimeClientError("No runtime URL is set: enter one in the add-on preferences", kind="request")
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuntimeClientError(f"Not an http(s) runtime URL: {url!r}", kind="request")
    return text.rstrip("/")


def is_loopback(url: str) -> bool:
    """True for localhost and loopback IP addresses only: a name like `127.0.0.1.example.org` is a DNS name."""
    host = urllib.parse.urlsplit(normalize_url(url)).hostname or ""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RuntimeClient:
    """Client of one runtime. `timeout` (seconds) bounds each HTTP call, not a whole generation (see `wait`)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0):
        self.url = normalize_url(url)
        self.token = token or None
        self.timeout = float(timeout)
        handlers: list[Any] = []
        if is_loopback(self.url):
            handlers.append(urllib.request.ProxyHandler({}))  # never send loopback traffic through a proxy
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"RuntimeClient({self.url!r}, token={'set' if self.token else None}, timeout={self.timeout})"

    # --- endpoints -------------------------------------------------------------------------------------------

    def health(self) -> dict:
        """`GET /v1/health` (no token needed)."""
        return self._json("GET", "/health", auth=False)

    def submit(self, **fields: Any) -> str:
        """`POST /v1/jobs`; returns the job id. `init_image`/`mask` may be bytes (base64-encoded here).

        None values are left out so the server applies its defaults. Unknown field names raise TypeError.
        """
        unknown = sorted(set(fields) - JOB_FIELDS)
        if unknown:
            raise TypeError(f"unknown job field(s) {unknown}; known: {sorted(JOB_FIELDS)}")
        body = {}
        for key, value in fields.items():
            if value is None:
                continue
            if isinstance(value, (bytes, bytearray, memoryview)):
                value = base64.b64encode(bytes(value)).decode("ascii")
            body[key] = value
        reply = self._json("POST", "/jobs", body=body)
        job_id = reply.get("id") if isinstance(reply, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise RuntimeClientError(f"The runtime at {self.url} answered a job without an id", kind="protocol")
        return job_id

    def status(self, job_id: str) -> dict:
        """`GET /v1/jobs/{id}`."""
        return self._json("GET", f"/jobs/{_quote(job_id)}")

    def cancel(self, job_id: str) -> dict:
        """`POST /v1/jobs/{id}/cancel`; returns the job status object."""
        return self._json("POST", f"/jobs/{_quote(job_id)}/cancel", body={})

    def image(self, job_id: str) -> bytes:
        """`GET /v1/jobs/{id}/image`: the PNG bytes of a finished job."""
        _, data = self._request("GET", f"/jobs/{_quote(job_id)}/image")
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise RuntimeClientError(f"The runtime at {self.url} sent an image that is not a PNG", kind="protocol")
        return data

    def wait(
        self,
        job_id: str,
        poll: float = 0.5,
        on_progress: Callable[[dict], Any] | None = None,
        timeout: float | None = None,
    ) -> dict:
        """Poll until the job is done; return its final status object (with `result`).

        on_progress(status) is called after every poll, from the calling thread. A failed job raises
        RuntimeClientError(kind="job_failed") with the server's error; a cancelled one kind="cancelled". After
        `timeout` seconds (None: no limit) the job is cancelled (best effort) and kind="timeout" is raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.status(job_id)
            if on_progress is not None:
                on_progress(state)
            status = state.get("status")
            if status == "done":
                return state
            if status == "failed":
                error = state.get("error") or "no reason given"
                raise RuntimeClientError(f"Generation failed: {error}", kind="job_failed")
            if status == "cancelled":
                raise RuntimeClientError("Generation was cancelled", kind="cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                try:
                    self.cancel(job_id)
                except RuntimeClientError:
                    pass
                raise RuntimeClientError(
                    f"Generation did not finish within {timeout:g} s and was cancelled", kind="timeout"
                )
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))

    # --- transport --------------------------------------------------------------------------------------------

    def _json(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        _, data = self._request(method, path, body=body, auth=auth)
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RuntimeClientError(
                f"The server at {self.url} did not answer JSON: is it an Imagen runtime?", kind="protocol"
            ) from None
        if not isinstance(value, dict):
            raise RuntimeClientError(f"The runtime at {self.url} answered {type(value).__name__}", kind="protocol")
        return value

    def _request(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> tuple[int, bytes]:
        headers = {"Accept": "application/json, image/png"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + API_PREFIX + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            raise self._http_error(err) from None
        except (socket.timeout, TimeoutError):
            raise self._timeout_error() from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, (socket.timeout, TimeoutError)):
                raise self._timeout_error() from None
            raise RuntimeClientError(
                f"The Imagen runtime is not running at {self.url} ({_reason(err.reason)}). Start it from the "
                "add-on preferences, or run `imagen serve`.",
                kind="connection",
            ) from None
        except (ConnectionError, OSError) as err:  # reset / closed mid-answer
            raise RuntimeClientError(
                f"The connection to the Imagen runtime at {self.url} failed ({_reason(err)})", kind="connection"
            ) from None

    def _timeout_error(self) -> RuntimeClientError:
        return RuntimeClientError(
            f"The Imagen runtime at {self.url} did not answer within {self.timeout:g} s", kind="timeout"
        )

    def _http_error(self, err: urllib.error.HTTPError) -> RuntimeClientError:
        try:
            raw = err.read()
        except OSError:
            raw = b""
        server_text = _error_text(raw)
        code = err.code
        if code == 401:
            return RuntimeClientError(
                f"The Imagen runtime at {self.url} rejected the token (wrong token): check the token in the "
                "add-on preferences",
                kind="auth",
                status=code,
            )
        if code == 429:
            text = server_text or "queue is full"
            return RuntimeClientError(f"The Imagen runtime is busy: {text}", kind="queue_full", status=code)
        if code == 404:
            return RuntimeClientError(server_text or f"Not found on the runtime: {err.url}", kind="not_found",
                                      status=code)
        if 400 <= code < 500:
            return RuntimeClientError(server_text or f"The runtime refused the request (HTTP {code})",
                                      kind="request", status=code)
        return RuntimeClientError(
            f"The Imagen runtime failed (HTTP {code}): {server_text or 'no details'}", kind="server", status=code
        )


def _quote(job_id: str) -> str:
    return urllib.parse.quote(str(job_id), safe="")


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def _error_text(raw: bytes) -> str:
    """The `error` of a JSON error body; FastAPI's `detail` or the raw text as a fallback."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text[:300]
    if isinstance(value, dict):
        for key in ("error", "detail", "message"):
            if value.get(key):
                detail = value[key]
                return detail if isinstance(detail, str) else json.dumps(detail)[:300]
    return text[:300]
