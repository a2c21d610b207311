"""RuntimeClient against a stdlib fake runtime that follows docs/runtime-api.md (no torch, no FastAPI)."""

from __future__ import annotations

import base64
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_imagen_runtime import FakeRuntime, make_png  # noqa: E402

from imagen_addon.runtime.client import RuntimeClient, RuntimeClientError, is_loopback, normalize_url  # noqa: E402


@pytest.fixture
def fake():
    with FakeRuntime(token="secret", steps=3) as runtime:
        yield runtime


@pytest.fixture
def client(fake):
    return RuntimeClient(fake.url, "secret", timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_health_needs_no_token(fake):
    health = RuntimeClient(fake.url, None).health()
    assert health["status"] == "ok" and health["api"] == 1
    assert ("GET", "/v1/health", None) in fake.requests


def test_full_job_round_trip(client, fake):
    job_id = client.submit(prompt="a red brick wall", seed=7, steps=10, width=16, height=8, tiling="xy")
    seen = []
    final = client.wait(job_id, poll=0.001, on_progress=lambda s: seen.append(s["progress"]))
    assert final["status"] == "done" and final["result"]["seed"] == 7
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 3
    png = client.image(job_id)
    assert png.startswith(b"\x89PNG") and png[16:24] == (16).to_bytes(4, "big") + (8).to_bytes(4, "big")
    method, path, body = fake.requests[0]
    assert (method, path) == ("POST", "/v1/jobs")
    assert body == {"prompt": "a red brick wall", "seed": 7, "steps": 10, "width": 16, "height": 8, "tiling": "xy"}


def test_fake_upscale_multiplies_the_init_image_size(client, fake):
    job_id = client.submit(mode="upscale", init_image=make_png(12, 8), seed=3, steps=2)
    final = client.wait(job_id, poll=0.001)
    assert (final["result"]["width"], final["result"]["height"]) == (24, 16)
    assert client.image(job_id)[16:24] == (24).to_bytes(4, "big") + (16).to_bytes(4, "big")
    assert [s["kind"] for s in client.health()["model"]["stages"]] == ["base", "sr"]
    fake.sr_factor = 1
    with pytest.raises(RuntimeClientError, match="no super-resolution stage"):
        client.submit(mode="upscale", init_image=make_png(12, 8))
    with pytest.raises(RuntimeClientError, match="not a PNG"):
        client.submit(mode="upscale", init_image=b"GIF89a")


def test_none_fields_are_left_out_and_bytes_are_base64(client, fake):
    client.submit(mode="img2img", prompt="x", seed=None, init_image=b"\x89PNGfake")
    body = fake.requests[-1][2]
    assert "seed" not in body
    assert base64.b64decode(body["init_image"]) == b"\x89PNGfake"


def test_unknown_field_is_a_programming_error(client):
    with pytest.raises(TypeError, match="promt"):
        client.submit(promt="typo")


def test_connection_refused_says_runtime_not_running():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeClientError) as info:
        RuntimeClient(url, "t", timeout=2).health()
    assert info.value.kind == "connection" and info.value.status is None
    assert f"not running at {url}" in str(info.value)


def test_wrong_token_is_401(fake):
    for token in ("wrong", None):
        with pytest.raises(RuntimeClientError, match="wrong token") as info:
            RuntimeClient(fake.url, token).submit(prompt="x")
        assert info.value.kind == "auth" and info.value.status == 401


def test_validation_error_carries_server_text(client):
    with pytest.raises(RuntimeClientError, match="prompt must not be empty") as info:
        client.submit(prompt="")
    assert info.value.kind == "request" and info.value.status == 422


def test_queue_full_is_429(fake):
    fake.queue_max = 1
    client = RuntimeClient(fake.url, "secret")
    client.submit(prompt="one")
    with pytest.raises(RuntimeClientError, match="queue is full") as info:
        client.submit(prompt="two")
    assert info.value.kind == "queue_full" and info.value.status == 429


def test_unknown_job_is_404(client):
    with pytest.raises(RuntimeClientError, match="no job") as info:
        client.status("nope")
    assert info.value.kind == "not_found"


def test_image_before_done_is_409(client):
    job_id = client.submit(prompt="x")
    with pytest.raises(RuntimeClientError, match="not done") as info:
        client.image(job_id)
    assert info.value.status == 409


def test_request_timeout(fake):
    fake.delay = 0.5
    with pytest.raises(RuntimeClientError, match="did not answer within 0.1 s") as info:
        RuntimeClient(fake.url, "secret", timeout=0.1).health()
    assert info.value.kind == "timeout"


def test_failed_job_raises_with_server_error(client, fake):
    fake.fail_with = "CUDA out of memory"
    job_id = client.submit(prompt="x")
    with pytest.raises(RuntimeClientError, match="Generation failed: CUDA out of memory") as info:
        client.wait(job_id, poll=0.001)
    assert info.value.kind == "job_failed"


def test_cancel(client):
    job_id = client.submit(prompt="x")
    assert client.cancel(job_id)["status"] == "cancelled"
    with pytest.raises(RuntimeClientError) as info:
        client.wait(job_id, poll=0.001)
    assert info.value.kind == "cancelled"


def test_wait_timeout_cancels_the_job(client, fake):
    fake.steps = 10_000
    job_id = client.submit(prompt="x")
    with pytest.raises(RuntimeClientError, match="did not finish") as info:
        client.wait(job_id, poll=0.01, timeout=0.05)
    assert info.value.kind == "timeout"
    assert fake.jobs[job_id]["status"] == "cancelled"


def test_non_json_answer_is_a_protocol_error():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Html(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>not a runtime</html>")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        with pytest.raises(RuntimeClientError, match="did not answer JSON") as info:
            RuntimeClient(f"http://127.0.0.1:{server.server_address[1]}").health()
        assert info.value.kind == "protocol"
    finally:
        server.server_close()


@pytest.mark.parametrize(
    "url, expected",
    [("127.0.0.1:8000/", "http://127.0.0.1:8000"), ("http://localhost:1", "http://localhost:1"),
     (" https://gpu.example.org ", "https://gpu.example.org")],
)
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


def test_bad_urls():
    for url in ("", "ftp://x", "http://"):
        with pytest.raises(RuntimeClientError):
            normalize_url(url)


def test_is_loopback():
    assert is_loopback("http://127.0.0.1:5") and is_loopback("localhost:8") and is_loopback("http://[::1]:9")
    assert not is_loopback("http://192.168.1.2:8000") and not is_loopback("https://gpu.example.org")
