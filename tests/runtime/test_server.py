"""Tests of `imagen serve` (imagen_addon/runtime/server.py, jobs.py, schemas.py) against docs/runtime-api.md.

Most tests use FastAPI's TestClient around a fake model (conftest.FakeImagen); the subprocess tests start the real
server (`cli_main` with the fake model, and `python -m imagen_addon.runtime.server`) and talk HTTP to it. Nothing
here asserts timings: waits poll with generous deadlines.
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import httpx
import pytest
from conftest import AUTH, TOKEN, FakeImagen, HeldModel, png_b64, wait_for
from PIL import Image

from imagen_addon.runtime import jobs as jobs_module
from imagen_addon.runtime.jobs import clean_output_dir, write_result
from imagen_addon.runtime.schemas import MAX_IMAGE_B64_CHARS
from imagen_addon.runtime import server as server_module
from imagen_addon.runtime.server import cli_main

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


# ---- health, OpenAPI, auth -----------------------------------------------------------------------------------
def test_health_needs_no_token_and_describes_the_model(api):
    body = assert_healthy(api)
    assert body["status"] == "ok" and body["api"] == 1 and body["worker"] == "ok"
    assert body["model"]["hash"] == "fakehash0123" and body["model"]["native_size"] == [16, 16]
    assert body["model"]["size_multiple"] == 8 and body["queue"] == {"length": 0, "max": 8}


def test_openapi_is_served_with_bearer_auth(api):
    spec = api.get("/openapi.json").json()
    assert {"/v1/health", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel",
            "/v1/jobs/{job_id}/image"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": "Bearer"}, {"Authorization": b"Bearer caf\xe9"}])
@pytest.mark.parametrize("method, path", [("POST", "/v1/jobs"), ("GET", "/v1/jobs/x"),
                                          ("POST", "/v1/jobs/x/cancel"), ("GET", "/v1/jobs/x/image")])
def test_missing_or_wrong_token_is_401(api, headers, method, path):
    response = api.request(method, path, headers=headers, json={"prompt": "a cat"})
    assert response.status_code == 401
    assert "token" in response.json()["error"] and response.headers["www-authenticate"] == "Bearer"


# ---- jobs end to end ---------------------------------------------------------------------------------------------
def test_text_to_image_writes_png_and_sidecar_before_done(api, fake_model, tmp_path):
    job_id = submit(api, prompt="a red cube", negative_prompt="blurry", steps=3, guidance_scale=4.5)
    state = wait_job(api, job_id)
    assert state["status"] == "done" and state["progress"] == 1.0 and state["error"] is None
    result = state["result"]
    assert result["file"] == f"imagen-{job_id}.png" and (result["width"], result["height"]) == (16, 16)
    method, (prompt,), kwargs = fake_model.calls[0]
    assert (method, prompt, kwargs["seed"]) == ("generate", "a red cube", result["seed"])
    assert kwargs["size"] == (16, 16) and kwargs["tiling"] == "none" and kwargs["negative_prompt"] == "blurry"
    assert kwargs["steps"] == 3 and kwargs["guidance_scale"] == 4.5 and kwargs["sampler"] == "dpmpp"

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [f"imagen-{job_id}.json", f"imagen-{job_id}.png"]
    image = api.get(f"/v1/jobs/{job_id}/image", headers=AUTH)
    assert image.headers["content-type"] == "image/png" and image.content == (out / result["file"]).read_bytes()
    png = Image.open(io.BytesIO(image.content))
    assert png.text["prompt"] == "a red cube" and png.text["seed"] == str(result["seed"])
    assert png.text["model_hash"] == "fakehash0123" and json.loads(png.text["settings"])["steps"] == 3
    sidecar = json.loads((out / f"imagen-{job_id}.json").read_text())
    assert sidecar["settings"] == result["settings"] and sidecar["model_hash"] == "fakehash0123"


def test_given_seed_is_used_and_reported(api, fake_model):
    state = wait_job(api, submit(api, prompt="x", seed=2**32 - 1, steps=1))
    assert state["result"]["seed"] == 2**32 - 1 and fake_model.calls[0][2]["seed"] == 2**32 - 1


@pytest.mark.parametrize("mode, extra, strength", [
    ("img2img", {}, 0.7), ("img2img", {"strength": 0.25}, 0.25),
    ("inpaint", {"mask": png_b64(mode="L", color=255)}, 1.0),
    ("inpaint", {"mask": png_b64(mode="L"), "strength": 0.5}, 0.5),
])
def test_image_modes_pass_init_image_mask_and_strength(api, fake_model, mode, extra, strength):
    init = png_b64(color=(9, 8, 7))
    state = wait_job(api, submit(api, mode=mode, prompt="a cat", steps=1, init_image=init, **extra))
    assert state["status"] == "done"
    kwargs = fake_model.calls[0][2]
    assert kwargs["init_image"].getpixel((0, 0)) == (9, 8, 7) and kwargs["strength"] == strength
    assert (kwargs.get("mask") is not None) == (mode == "inpaint")


def test_upscale_calls_model_upscale_with_prompt(api, fake_model):
    state = wait_job(api, submit(api, mode="upscale", steps=2, init_image=png_b64((8, 8))))
    method, (image, prompt), kwargs = fake_model.calls[0]
    assert method == "upscale" and image.size == (8, 8) and prompt == "" and kwargs["steps"] == 2
    assert (state["result"]["width"], state["result"]["height"]) == (16, 16)


@pytest.mark.parametrize("body, size, tiling", [
    ({"tiling": "xy"}, (16, 16), "xy"), ({"width": 32, "height": 8}, (32, 8), "none"),
    ({"panorama": True}, (32, 16), "x"), ({"panorama": True, "height": 24}, (48, 24), "x"),
    ({"panorama": True, "width": 64, "tiling": "x"}, (64, 32), "x"),
])
def test_tiling_and_panorama_sizes(api, fake_model, body, size, tiling):
    state = wait_job(api, submit(api, prompt="a wall", steps=1, **body))
    kwargs = fake_model.calls[0][2]
    assert (kwargs["size"], kwargs["tiling"]) == (size, tiling)
    assert (state["result"]["width"], state["result"]["height"]) == size


# ---- queue and cancel --------------------------------------------------------------------------------------------
def test_cancel_queued_and_running_jobs(make_api, tmp_path):
    model = FakeImagen(hold=True)  # the first job stays on its first step until released
    client, _ = make_api(model)
    running = submit(client, prompt="first", steps=5)
    assert model.started.wait(20)
    queued = submit(client, prompt="second", steps=5)
    assert client.get(f"/v1/jobs/{queued}", headers=AUTH).json()["position"] == 0

    cancelled = client.post(f"/v1/jobs/{queued}/cancel", headers=AUTH).json()
    assert cancelled["status"] == "cancelled" and cancelled["position"] is None
    assert client.get(f"/v1/jobs/{running}", headers=AUTH).json()["status"] == "running"
    client.post(f"/v1/jobs/{running}/cancel", headers=AUTH)
    assert wait_job(client, running)["status"] == "cancelled"
    assert [c[1][0] for c in model.calls] == ["first"]  # the queued job never reached the model
    assert not list((tmp_path / "out").iterdir())

    model.release.set()
    assert wait_job(client, submit(client, prompt="third", steps=1))["status"] == "done"
    assert assert_healthy(client)["worker"] == "ok"


def test_full_queue_is_429(make_api):
    model = FakeImagen(hold=True)
    client, _ = make_api(model, queue_size=2)
    submit(client, prompt="running")
    assert model.started.wait(20)
    submit(client, prompt="queued 1")
    submit(client, prompt="queued 2")
    response = client.post("/v1/jobs", json={"prompt": "one too many"}, headers=AUTH)
    assert response.status_code == 429 and response.json()["error"] == "queue is full (2 jobs); try again later"
    assert assert_healthy(client)["queue"] == {"length": 2, "max": 2}


def test_model_error_fails_the_job_and_the_server_keeps_answering(make_api):
    model = FakeImagen(error=MemoryError("out of memory"))
    client, _ = make_api(model)
    state = wait_job(client, submit(client, prompt="x", steps=1))
    assert state["status"] == "failed" and state["error"] == "MemoryError: out of memory"
    health = assert_healthy(client)
    assert health["status"] == "degraded" and health["worker"] == "crashed: MemoryError: out of memory"
    model.error = None  # the worker survives and serves the next job
    assert wait_job(client, submit(client, prompt="y", steps=1))["status"] == "done"
    assert assert_healthy(client)["status"] == "ok"


def test_result_write_failure_fails_the_job(make_api, fake_model, monkeypatch):
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jobs_module, "write_result", disk_full)
    client, _ = make_api(fake_model)
    state = wait_job(client, submit(client, prompt="x", steps=1))
    assert state["status"] == "failed" and "No space left on device" in state["error"]


def test_dead_worker_is_reported_and_refuses_new_jobs(make_api, fake_model, monkeypatch):
    def escapes(*args):  # not an Exception: gets past the per-job handler, like a bug in the worker loop
        raise KeyboardInterrupt("worker bug")

    monkeypatch.setattr(jobs_module, "run_model", escapes)
    client, _ = make_api(fake_model)
    state = wait_job(client, submit(client, prompt="x"))
    assert state["status"] == "failed" and "worker bug" in state["error"]
    health = assert_healthy(client)
    assert health["status"] == "degraded" and health["worker"].startswith("dead: KeyboardInterrupt")
    response = client.post("/v1/jobs", json={"prompt": "y"}, headers=AUTH)
    assert response.status_code == 503 and "restart the runtime" in response.json()["error"]


def test_unknown_job_404_unfinished_409_removed_file_410(make_api, tmp_path):
    model = FakeImagen(hold=True)
    client, _ = make_api(model)
    assert client.get("/v1/jobs/nope", headers=AUTH).status_code == 404
    assert client.post("/v1/jobs/nope/cancel", headers=AUTH).status_code == 404
    assert client.get("/v1/jobs/nope/image", headers=AUTH).status_code == 404
    job_id = submit(client, prompt="x", steps=1)
    response = client.get(f"/v1/jobs/{job_id}/image", headers=AUTH)
    assert response.status_code == 409 and "done" in response.json()["error"]
    model.release.set()
    wait_job(client, job_id)
    (tmp_path / "out" / f"imagen-{job_id}.png").unlink()
    assert client.get(f"/v1/jobs/{job_id}/image", headers=AUTH).status_code == 410


# ---- input validation --------------------------------------------------------------------------------------------
# (body, the field the error must name); every field of the request, each way it can be wrong.
BAD_FIELDS = [
    ("prompt", ""), ("prompt", "   "), ("prompt", "x" * 1001), ("prompt", 5), ("prompt", "a\x00b"),
    ("negative_prompt", "n" * 1001), ("negative_prompt", None), ("mode", "paint"), ("seed", -1), ("seed", 2**32),
    ("seed", "abc"), ("steps", True), ("steps", "5"), ("panorama", 1), ("steps", 0), ("steps", 251), ("steps", 2.5), ("sampler", "euler"),
    ("guidance_scale", -0.1), ("guidance_scale", 31), ("guidance_scale", "lots"), ("width", 4), ("width", 2048),
    ("width", 20), ("height", 1025), ("height", 12), ("tiling", "y"), ("panorama", "sometimes"),
    ("strength", 1.5), ("strength", -0.1), ("colour", "red"), ("mask", png_b64()), ("init_image", 7),
]
BAD_BODIES = [({"prompt": "x", name: value}, name) for name, value in BAD_FIELDS] + [
    ({"prompt": "x", "panorama": True, "tiling": "xy"}, "tiling"),
    ({"prompt": "x", "panorama": True, "height": 600}, "width"),
    ({"prompt": "x", "panorama": True, "width": 40, "height": 8}, "width"),
    ({"prompt": "x", "panorama": True, "width": 24}, "height"),
    ({"mode": "img2img", "prompt": "x"}, "init_image"), ({"mode": "upscale"}, "init_image"),
    ({"mode": "inpaint", "prompt": "x", "init_image": png_b64()}, "mask"),
]


@pytest.mark.parametrize("body, field", BAD_BODIES)
def test_bad_fields_are_422_naming_the_field(api, body, field):
    response = api.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]


def test_non_finite_numbers_and_malformed_bodies_are_4xx(api):
    for content in (b'{"prompt": "x", "guidance_scale": NaN}', b'{"prompt": "x", "strength": Infinity}', b"{bad",
                    b"[]", b'"a cat"', b"", b"\xff\xfe"):
        response = api.post("/v1/jobs", content=content, headers={**AUTH, "content-type": "application/json"})
        assert 400 <= response.status_code < 500 and response.json()["error"], content
    response = api.post("/v1/jobs", content=b"prompt=x", headers={**AUTH, "content-type": "text/plain"})
    assert response.status_code == 422 and "JSON object" in response.json()["error"]
    assert api.delete("/v1/jobs", headers=AUTH).status_code == 405
    assert api.get("/v2/anything").status_code == 404
    assert assert_healthy(api)["status"] == "ok"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (no pixel data): a decompression bomb's first bytes."""
    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48).save(buf, format="PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.mark.parametrize("image, message", [
    ("not base64!", "not valid base64"), (_b64(b"hello, not an image"), "not a PNG, JPEG or WebP"),
    (png_b64(fmt="GIF"), "not a PNG, JPEG or WebP"), (png_b64(fmt="BMP"), "not a PNG, JPEG or WebP"),
    (_b64(_png_header_only(100_000, 100_000)), "too many pixels"), (_b64(_png_header_only(5000, 10)), "5000x10"),
    (png_b64((4097, 1), mode="L"), "4097x1"), (_b64(_truncated_png()), "could not be decoded"),
    ("", "init_image"), ("data:image/png,abc", "data URL"),
])
def test_bad_image_payloads_are_422(api, image, message):
    response = api.post("/v1/jobs", json={"mode": "img2img", "prompt": "x", "init_image": image}, headers=AUTH)
    assert response.status_code == 422 and message in response.json()["error"], response.text
    assert assert_healthy(api)["status"] == "ok"


def test_image_formats_and_data_urls_are_accepted(api):
    for image in (png_b64(fmt="JPEG"), png_b64(fmt="WEBP"), "data:image/png;base64," + png_b64()):
        assert api.post("/v1/jobs", json={"mode": "img2img", "prompt": "x", "steps": 1, "init_image": image},
                        headers=AUTH).status_code == 202


def test_oversized_payload_is_rejected_before_decoding(api):
    response = api.post("/v1/jobs", json={"mode": "upscale", "init_image": "A" * (MAX_IMAGE_B64_CHARS + 4)},
                        headers=AUTH)
    assert response.status_code == 422 and "too large" in response.json()["error"]


@pytest.mark.parametrize("size, message", [((6, 6), "multiples of 4"), ((520, 8), "at most 512 px")])
def test_upscale_input_must_give_a_possible_output_size(api, size, message):
    response = api.post("/v1/jobs", json={"mode": "upscale", "init_image": png_b64(size)}, headers=AUTH)
    assert response.status_code == 422 and message in response.json()["error"]


def test_mask_must_match_the_init_image(api):
    body = {"mode": "inpaint", "prompt": "x", "init_image": png_b64((16, 16)), "mask": png_b64((8, 8), mode="L")}
    response = api.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 422 and "same size" in response.json()["error"]


def test_too_large_body_is_413(make_api, fake_model, monkeypatch):
    monkeypatch.setattr(server_module, "MAX_BODY_BYTES", 1000)  # instead of ~45 MB
    client, _ = make_api(fake_model)
    body = json.dumps({"prompt": "x" * 990}).encode()
    response = client.post("/v1/jobs", content=body, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 413 and "too large" in response.json()["error"]
    chunks = iter([body[:600], body[600:]])  # no Content-Length: counted as it arrives
    response = client.post("/v1/jobs", content=chunks, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 413 and "too large" in response.json()["error"]
    assert assert_healthy(client)["status"] == "ok"


def test_schemathesis_finds_no_server_errors(api):
    """A bounded fuzz of the OpenAPI spec (valid and invalid requests, with the token): no 5xx, and every answer
    matches the documented status codes, content types and response schemas."""
    schemathesis = pytest.importorskip("schemathesis", minversion="4")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import checks

    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    strategy = st.one_of(schema.as_strategy(schemathesis.GenerationMode.POSITIVE),
                         schema.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    conformance = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
                   checks.response_schema_conformance]
    seen = set()

    @settings(max_examples=200, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case):
        response = case.call_and_validate(headers=AUTH, checks=conformance)
        seen.add(response.status_code)

    check()
    assert 422 in seen and 200 in seen
    assert assert_healthy(api)["worker"] == "ok"


# ---- result files ------------------------------------------------------------------------------------------------
def test_results_are_written_atomically_and_leftovers_cleaned(tmp_path, monkeypatch):
    image, settings = Image.new("RGB", (8, 8)), {"prompt": "p", "negative_prompt": "", "seed": 1}
    assert write_result(tmp_path, "a" * 32, image, settings, "h") == f"imagen-{'a' * 32}.png"
    real_replace = os.replace

    def failing_replace(src, dst):  # the disk fills up just before the PNG is renamed into place
        if str(dst).endswith(".png"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(jobs_module.os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_result(tmp_path, "b" * 32, image, settings, "h")
    pair = [f"imagen-{'a' * 32}.json", f"imagen-{'a' * 32}.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == pair  # no temp file, no sidecar without its PNG
    (tmp_path / ".imagen-stale.tmp").write_bytes(b"half a png")  # what a SIGKILL mid-write leaves
    (tmp_path / f"imagen-{'c' * 32}.json").write_text("{}")  # ... or between the two renames
    (tmp_path / "my-notes.txt").write_text("not ours")
    clean_output_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == pair + ["my-notes.txt"]


# ---- the real model (tiny, untrained) -------------------------------------------------------------------------------
REAL_JOBS = [
    ({"prompt": "a red cube", "seed": 7}, (32, 32)),
    ({"prompt": "stone wall", "tiling": "xy", "width": 24, "height": 16}, (24, 16)),
    ({"prompt": "mountains", "panorama": True, "height": 16}, (32, 16)),
    ({"prompt": "a blue cube", "mode": "img2img", "init_image": png_b64((32, 32), color=(0, 0, 200)), "strength": 0.5},
     (32, 32)),
    ({"prompt": "a hole", "mode": "inpaint", "init_image": png_b64((32, 32)), "mask": png_b64((32, 32), "L", 255)},
     (32, 32)),
    ({"mode": "upscale", "init_image": png_b64((16, 16), color=(200, 0, 0))}, (32, 32)),
]


@pytest.mark.parametrize("body, size", REAL_JOBS, ids=["text2img", "tiling", "panorama", "img2img", "inpaint",
                                                       "upscale"])
def test_real_model_end_to_end(make_api, tiny_imagen, body, size):
    client, _ = make_api(tiny_imagen)
    state = wait_job(client, submit(client, steps=2, **body))
    assert state["status"] == "done", state["error"]
    assert (state["result"]["width"], state["result"]["height"]) == size
    png = Image.open(io.BytesIO(client.get(f"/v1/jobs/{state['id']}/image", headers=AUTH).content))
    assert png.size == size and png.text["seed"] == str(state["result"]["seed"])


def test_real_model_same_seed_same_image(make_api, tiny_imagen):
    client, _ = make_api(tiny_imagen)
    first, second = (wait_job(client, submit(client, prompt="a cat", seed=3, steps=2)) for _ in range(2))
    pixels = [Image.open(io.BytesIO(client.get(f"/v1/jobs/{s['id']}/image", headers=AUTH).content)).tobytes()
              for s in (first, second)]
    assert pixels[0] == pixels[1]


def test_real_model_cancel_running_job(make_api, tiny_imagen, tmp_path):
    model = HeldModel(tiny_imagen)
    client, _ = make_api(model)
    job_id = submit(client, prompt="a cat", steps=50)
    assert model.started.wait(60)
    client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH)
    state = wait_job(client, job_id)
    assert state["status"] == "cancelled" and state["step"] == 1 and state["stage"] == 0
    assert not list((tmp_path / "out").iterdir())
    model.release.set()
    assert wait_job(client, submit(client, prompt="a dog", steps=1))["status"] == "done"


def test_serve_module_with_a_real_model_folder(tiny_model_dir, tmp_path):
    """`python -m imagen_addon.runtime.server --model DIR`, exactly as the launcher starts it."""
    token = "launcher-token-abcdefghijklmnop"
    env = {**os.environ, "PYTHONPATH": str(REPO), "IMAGEN_RUNTIME_TOKEN": token}
    cmd = [sys.executable, "-m", "imagen_addon.runtime.server", "--model", str(tiny_model_dir), "--device", "cpu",
           "--port", "0", "--output", str(tmp_path / "out")]
    proc, ready = spawn(cmd, env, tmp_path)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=ready["url"], timeout=60) as http:
            health = http.get("/v1/health").json()
            assert health["model"]["path"] == str(tiny_model_dir) and health["model"]["native_size"] == [32, 32]
            job = http.post("/v1/jobs", json={"prompt": "a cat", "steps": 2}, headers=auth).json()["id"]
            assert wait_job_http(http, auth, job)["status"] == "done"
            png = Image.open(io.BytesIO(http.get(f"/v1/jobs/{job}/image", headers=auth).content))
            assert png.text["model_hash"] == health["model"]["hash"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert only_complete_pairs(tmp_path / "out") == [f"imagen-{job}.png"]


# ---- the real server process --------------------------------------------------------------------------------------
SERVE_FAKE = """
import sys
sys.path.insert(0, {here!r})
from conftest import FakeImagen
from imagen_addon.runtime.server import cli_main
sys.exit(cli_main(sys.argv[1:], load_model=lambda path, device: FakeImagen(step_delay=0.02)))
"""


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


def start_runtime(tmp_path: Path, *args: str, env: dict | None = None):
    """Start `cli_main` with the fake model in a subprocess; return (process, READY info)."""
    code = SERVE_FAKE.format(here=str(Path(__file__).parent))
    full_env = {k: v for k, v in os.environ.items() if k != "IMAGEN_RUNTIME_TOKEN"}
    full_env.update(PYTHONPATH=str(REPO), **(env or {}))
    cmd = [sys.executable, "-c", code, "--device", "cpu", "--output", str(tmp_path / "out"), *args]
    return spawn(cmd, full_env, tmp_path)


def only_complete_pairs(out: Path) -> list[str]:
    """Assert the output folder holds only complete PNG + JSON pairs; return the PNG names."""
    names = sorted(p.name for p in out.iterdir())
    pngs = [n for n in names if n.endswith(".png")]
    assert names == sorted(pngs + [n[:-4] + ".json" for n in pngs]), names
    for name in pngs:
        Image.open(out / name).load()
        json.loads((out / name).with_suffix(".json").read_text())
    return pngs


def test_serve_process_end_to_end_then_sigterm(tmp_path):
    proc, ready = start_runtime(tmp_path, "--token-file", str(tmp_path / "token"))
    try:
        token_file = Path(ready["token_file"])
        assert token_file == tmp_path / "token" and (token_file.stat().st_mode & 0o777) == 0o600
        assert ready["url"].startswith("http://127.0.0.1:") and ready["output"] == str(tmp_path / "out")
        auth = {"Authorization": f"Bearer {token_file.read_text()}"}
        with httpx.Client(base_url=ready["url"], timeout=30) as http:
            assert http.get("/v1/health").json()["status"] == "ok"
            assert http.post("/v1/jobs", json={"prompt": "x"}).status_code == 401
            done = http.post("/v1/jobs", json={"prompt": "x", "steps": 1}, headers=auth).json()["id"]
            assert wait_job_http(http, auth, done)["status"] == "done"
            assert http.get(f"/v1/jobs/{done}/image", headers=auth).content.startswith(b"\x89PNG")
            slow = http.post("/v1/jobs", json={"prompt": "slow", "steps": 250}, headers=auth).json()["id"]
            wait_job_http(http, auth, slow, ("running",))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert not token_file.exists()
    assert only_complete_pairs(tmp_path / "out") == [f"imagen-{done}.png"]


def test_sigkill_mid_job_leaves_only_complete_results(tmp_path):
    token = "launcher-given-token-0123456789"
    proc, ready = start_runtime(tmp_path, env={"IMAGEN_RUNTIME_TOKEN": token})
    try:
        assert ready["token_file"] is None
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=ready["url"], timeout=30) as http:
            done = http.post("/v1/jobs", json={"prompt": "x", "steps": 1}, headers=auth).json()["id"]
            assert wait_job_http(http, auth, done)["status"] == "done"
            slow = http.post("/v1/jobs", json={"prompt": "slow", "steps": 250}, headers=auth).json()["id"]
            wait_job_http(http, auth, slow, ("running",))
        proc.kill()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert only_complete_pairs(tmp_path / "out") == [f"imagen-{done}.png"]


def wait_job_http(http: httpx.Client, auth: dict, job_id: str, statuses=FINISHED) -> dict:
    def state():
        body = http.get(f"/v1/jobs/{job_id}", headers=auth).json()
        return body if body["status"] in statuses else None

    return wait_for(state, timeout=60, interval=0.05)


@pytest.mark.parametrize("args, env, message", [
    (["--host", "0.0.0.0"], {}, "--allow-remote"),
    (["--host", "192.168.1.5", "--allow-remote"], {}, "IMAGEN_RUNTIME_TOKEN"),
    (["--host", "127.0.0.1"], {"IMAGEN_RUNTIME_TOKEN": "short"}, "16 to 512"),
])
def test_unsafe_host_or_token_is_refused(args, env, message, monkeypatch, capsys):
    monkeypatch.delenv("IMAGEN_RUNTIME_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli_main(args, load_model=lambda *a: pytest.fail("must refuse before loading the model")) == 2
    assert message in capsys.readouterr().err


def test_unwritable_output_folder_is_refused(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    load = lambda *a: pytest.fail("must refuse before loading the model")  # noqa: E731
    assert cli_main(["--device", "cpu", "--output", str(tmp_path / "a-file")], load_model=load) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_module_entry_point_refuses_remote_without_flag():
    result = subprocess.run([sys.executable, "-m", "imagen_addon.runtime.server", "--host", "0.0.0.0"],
                            capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and "--allow-remote" in result.stderr
