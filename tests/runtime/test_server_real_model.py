"""`imagen serve` with the real cascade at test size (conftest.tiny_imagen: 16 px base, 32 px SR, untrained):
every mode end to end, same seed same image, cancelling mid-sampling, and `python -m imagen_addon.runtime.server
--model DIR` exactly as the launcher starts it.
"""

from __future__ import annotations

import io
import os
import signal
import sys

import httpx
import pytest
from conftest import AUTH, REPO, HeldModel, only_complete_pairs, png_b64, spawn, submit, wait_job, wait_job_http
from PIL import Image


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
