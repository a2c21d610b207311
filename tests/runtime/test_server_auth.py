"""`imagen serve` security: health and OpenAPI without a token, 401 on every protected route, and the startup
checks that refuse an unsafe host, a weak token or an unwritable output folder before the model loads.

In-process tests use FastAPI's TestClient around the fake model (conftest.FakeImagen); the last one starts
`python -m imagen_addon.runtime.server`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, TOKEN, assert_healthy

from imagen_addon.runtime.server import cli_main


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


# ---- refusing unsafe settings at startup --------------------------------------------------------------------
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
