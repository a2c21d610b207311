"""Shared fixtures: tiny models that build in milliseconds; the frozen MiniLM encoder loads once per session."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_imagen():
    torch = pytest.importorskip("torch")
    from imagen_addon.core.imagen import Imagen, tiny_config

    torch.manual_seed(0)
    return Imagen(tiny_config()).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_imagen, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_imagen.save_pretrained(path)
    return path
