"""`imagen serve` results on disk and at the image endpoint: the PNG and its JSON sidecar are written before a job
is done, 404 / 409 / 410 for unknown, unfinished and removed results, atomic writes with leftovers cleaned, and a real
server process (`cli_main` with the fake model) that leaves only complete PNG + JSON pairs after SIGTERM or SIGKILL.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from conftest import AUTH, REPO, FakeImagen, only_complete_pairs, spawn, submit, wait_job, wait_job_http
from PIL import Image

from imagen_addon.runtime import jobs as jobs_module
from imagen_addon.runtime.jobs import clean_output_dir, write_result


# ---- through the API (TestClient, fake model) --------------------------------------------------------------------
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


# ---- the real server process --------------------------------------------------------------------------------------
SERVE_FAKE = """
import sys
sys.path.insert(0, {here!r})
from conftest import FakeImagen
from imagen_addon.runtime.server import cli_main
sys.exit(cli_main(sys.argv[1:], load_model=lambda path, device: FakeImagen(step_delay=0.02)))
"""



def start_runtime(tmp_path: Path, *args: str, env: dict | None = None):
    """Start `cli_main` with the fake model in a subprocess; return (process, READY info)."""
    code = SERVE_FAKE.format(here=str(Path(__file__).parent))
    full_env = {k: v for k, v in os.environ.items() if k != "IMAGEN_RUNTIME_TOKEN"}
    full_env.update(PYTHONPATH=str(REPO), **(env or {}))
    cmd = [sys.executable, "-c", code, "--device", "cpu", "--output", str(tmp_path / "out"), *args]
    return spawn(cmd, full_env, tmp_path)



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
