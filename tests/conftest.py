"""Shared fixtures: tiny models that build in milliseconds; the frozen MiniLM encoder loads once per session."""

import os
import subprocess
import sys

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


@pytest.fixture(scope="session")
def real_bpy() -> None:
    """Skip (with how to install it) unless Blender as a Python module imports here. Probed once per session, in a
    subprocess: importing bpy into the test process would tie it to Blender's state."""
    probe = subprocess.run([sys.executable, "-c", "import bpy"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        error = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        pytest.skip(f"Blender as a Python module is not installed (`import bpy` failed: {error}); "
                    "install it with `pip install bpy==5.0.1`")
