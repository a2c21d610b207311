"""`imagen serve` jobs against docs/runtime-api.md: each mode reaches the model with the right arguments, the
queue and cancel, a full queue, and failures (model error, write error, dead worker) that leave the server answering.

TestClient around the fake model (conftest.FakeImagen); nothing asserts timings: waits poll with generous deadlines.
"""

from __future__ import annotations

import pytest
from conftest import AUTH, FakeImagen, assert_healthy, png_b64, submit, wait_job

from imagen_addon.runtime import jobs as jobs_module


# ---- modes and their arguments -----------------------------------------------------------------------------------
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
    assert kwargs["tiling"] == "none"


@pytest.mark.parametrize("body, tiling", [({"tiling": "xy"}, "xy"), ({"tiling": "x"}, "x"), ({"panorama": True}, "x")])
def test_upscale_of_a_seamless_image_stays_seamless(api, fake_model, body, tiling):
    state = wait_job(api, submit(api, mode="upscale", steps=2, init_image=png_b64((8, 8)), **body))
    assert state["status"] == "done" and fake_model.calls[0][2]["tiling"] == tiling
    assert state["result"]["settings"]["tiling"] == tiling


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


# ---- failures: the job fails, the server keeps answering ---------------------------------------------------------
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
