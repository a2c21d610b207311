"""The runtime end to end with the bundled model (few steps): every mode, and the CLI gives the same image."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from conftest import AUTH, wait_for


@pytest.fixture(scope="module")
def bundled():
    from imagen_addon.core.imagen import Imagen

    return Imagen.from_pretrained()


def run(client, **body) -> tuple[dict, Image.Image]:
    response = client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    def finished():
        state = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        return state if state["status"] in ("done", "failed", "cancelled") else None

    state = wait_for(finished, timeout=120)
    assert state["status"] == "done", state
    image = Image.open(io.BytesIO(client.get(f"/v1/jobs/{job_id}/image", headers=AUTH).content))
    return state, image


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_every_mode_with_the_bundled_model(make_api, bundled):
    client, _ = make_api(bundled)
    health = client.get("/v1/health").json()
    assert health["model"]["native_size"] == [128, 128]
    _, image = run(client, prompt="a landscape with a red ball on the left on green grass under a clear sky",
                   seed=1, steps=3)
    assert image.size == (128, 128)
    _, pano = run(client, prompt="a landscape with hills under a sunset sky", panorama=True, seed=2, steps=3)
    assert pano.size == (256, 128)
    _, tile = run(client, prompt="a seamless texture of red bricks", tiling="xy", seed=3, steps=3)
    assert tile.size == (128, 128)
    _, img2img = run(client, mode="img2img", prompt="snow under a night sky", init_image=b64(image), strength=0.5,
                     seed=4, steps=4)
    assert img2img.size == (128, 128)
    _, up = run(client, mode="upscale", prompt="grass", init_image=b64(image.resize((32, 32))), seed=5, steps=3)
    assert up.size == (128, 128)


def test_cli_and_server_give_the_same_image(make_api, bundled, tmp_path):
    from imagen_addon.cli import main

    settings = dict(prompt="a yellow cube on the right on sand under an overcast sky", seed=11, steps=4,
                    sampler="ddim", guidance_scale=4.0)
    client, _ = make_api(bundled)
    _, served = run(client, **settings)
    out = tmp_path / "cli.png"
    assert main(["generate", settings["prompt"], "-o", str(out), "--seed", "11", "--steps", "4", "--sampler", "ddim",
                 "--guidance", "4.0"]) == 0
    assert np.array_equal(np.asarray(served), np.asarray(Image.open(out).convert("RGB")))
