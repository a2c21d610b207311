"""The built extension inside real Blender (bpy as a module), against the bundled model and a fake runtime.

One subprocess per runtime (bpy can be imported once per process and its state is global) runs
tests/blender/bpy_extension_checks.py with a temporary Blender user folder, so the real user configuration is
untouched; each test below asserts one of its checks. Twice: `bundled` against a real runtime serving the bundled
model (plus a second one the add-on starts itself in LOCAL mode), `fake` against tests/runtime/fake_imagen_runtime.py,
which also checks the exact request bodies the add-on sends. Skipped when `import bpy` fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import build_extension  # noqa: E402


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    return build_extension.build(ROOT, tmp_path_factory.mktemp("dist"), "lite")


BUNDLED_MODEL = ROOT / "imagen_addon" / "weights" / "default"


@pytest.fixture(scope="module")
def bundled_runtime(tmp_path_factory):
    """A real runtime serving the bundled model (started with the launcher the add-on uses)."""
    from imagen_addon.runtime.launcher import RuntimeLauncher

    state = tmp_path_factory.mktemp("bundled-runtime")
    launcher = RuntimeLauncher(state, model_dir=str(BUNDLED_MODEL), extra_args=["--output", str(state / "out")])
    info = launcher.start()
    try:
        health = info.client().health()
        yield info, health
    finally:
        launcher.stop()


@pytest.fixture(scope="module", params=["bundled", "fake"])
def report(request, extension_zip, tmp_path_factory, real_bpy) -> dict:
    home = tmp_path_factory.mktemp(f"blender-user-{request.param}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEN_TEST_")}
    if request.param == "bundled":
        info, health = request.getfixturevalue("bundled_runtime")
        env.update(IMAGEN_TEST_RUNTIME_URL=info.url, IMAGEN_TEST_RUNTIME_TOKEN=info.token,
                   IMAGEN_TEST_MODEL_DIR=str(BUNDLED_MODEL),
                   IMAGEN_TEST_NATIVE_SIZE=str(health["model"]["native_size"][1]))
    for var in ("BLENDER_USER_RESOURCES", "BLENDER_USER_CONFIG", "BLENDER_USER_SCRIPTS", "BLENDER_USER_DATAFILES",
                "BLENDER_USER_EXTENSIONS"):
        env[var] = str(home / var.lower())
    env["BLENDER_USER_RESOURCES"] = str(home)
    env["HOME"] = str(home)  # nothing may fall back to the real ~/.config/blender
    out = home / "report.json"
    script = Path(__file__).with_name("bpy_extension_checks.py")
    proc = subprocess.run([sys.executable, str(script), str(extension_zip), str(out)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=str(home))
    if not out.exists():
        pytest.fail(f"the bpy checks crashed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text(encoding="utf-8"))
    result["_home"] = str(home)
    result["_runtime"] = request.param
    return result


CHECKS = [
    "install", "registered", "build_scene", "describe_scene", "describe_empty_scene_is_refused",
    "empty_prompt_is_refused", "runtime_down_is_reported", "offline_refuses_remote_url", "local_runtime_not_started",
    "wrong_token_is_reported", "generate_from_prompt", "history_reuse", "set_world_panorama",
    "apply_material_and_reuse", "apply_material_refusals", "project_from_camera", "project_refusals",
    "generate_from_view", "generate_from_view_without_camera", "upscale_image", "pbr_maps",
    "upscale_and_pbr_refusals", "threaded_path_and_cancel", "local_runtime_autostart",
    "panels_and_preferences_draw", "disable_and_reenable",
]


@pytest.mark.parametrize("name", CHECKS)
def test_in_blender(report, name):
    entry = report.get(name)
    assert entry is not None, f"check {name} did not run (an earlier check stopped the run)"
    if entry.get("skipped"):
        pytest.skip(entry["skipped"])
    assert entry["ok"], entry["detail"]


def test_every_check_is_listed(report):
    assert sorted(k for k in report if not k.startswith("_")) == sorted(CHECKS)


def test_user_folder_is_temporary(report):
    assert report["install"]["detail"].startswith(report["_home"])


def test_zip_layout(extension_zip):
    with zipfile.ZipFile(extension_zip) as zf:
        names = zf.namelist()
        manifest = zf.read("blender_manifest.toml").decode("utf-8")
    assert names[0] == "blender_manifest.toml" and "__init__.py" in names
    assert "imagen_addon/blender/logic.py" in names and "imagen_addon/runtime/client.py" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/", "wheels/", "tools/", "dist/", "."))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "wheels" not in tomllib.loads(manifest)


def test_zip_is_valid_for_blender(extension_zip):
    """Blender's own validator (blender_ext.py ships inside bpy) accepts the archive."""
    script = _blender_ext_script()
    if script is None:
        pytest.skip("bpy's blender_ext.py not found")
    proc = subprocess.run([sys.executable, str(script), "validate", str(extension_zip)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_same_files_as_blender_build(extension_zip, tmp_path):
    """Our zipfile build picks exactly the files `blender --command extension build` would."""
    script = _blender_ext_script()
    if script is None:
        pytest.skip("bpy's blender_ext.py not found")
    theirs = tmp_path / "blender.zip"
    proc = subprocess.run([sys.executable, str(script), "build", "--source-dir", str(ROOT), "--output-filepath",
                           str(theirs)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with zipfile.ZipFile(theirs) as a, zipfile.ZipFile(extension_zip) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())


def _blender_ext_script() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("bpy")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        for path in Path(base).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"):
            return path
    return None
