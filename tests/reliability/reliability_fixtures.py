"""Fixtures of the reliability tests: the runtime app in-process (TestClient) around the fake model, and the
fake model itself (tests/runtime/conftest.py's FakeImagen, loaded as a plain module).

Test modules import them by name. This is deliberately not a conftest.py: tests/runtime's modules do
`from conftest import ...`, which breaks when pytest has loaded another folder's conftest.py last."""

from __future__ import annotations

import pytest
from reliability_serve import load_runtime_fakes
from reliability_support import TOKEN


@pytest.fixture(scope="session")
def fakes():
    return load_runtime_fakes()


@pytest.fixture
def make_api(tmp_path, fakes):
    """make_api(model=None, queue_size=8) -> (TestClient, JobManager, output folder); closed after the test."""
    from fastapi.testclient import TestClient

    from imagen_addon.runtime.jobs import JobManager
    from imagen_addon.runtime.server import create_app

    opened = []

    def make(model=None, queue_size: int = 8):
        model = model or fakes.FakeImagen()
        out = tmp_path / "out"
        jobs = JobManager(model, out, max_queue=queue_size, model_hash=model.info()["model_hash"])
        jobs.start()
        app = create_app(jobs, token=TOKEN, model_info=model.info(), model_path="fake", device="cpu")
        client = TestClient(app)
        opened.append((client, jobs, model))
        return client, jobs, out

    yield make
    for client, jobs, model in opened:
        model.release.set()
        jobs.close()
        client.close()
