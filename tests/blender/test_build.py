"""tools/build_extension.py on a small fake source tree: plain pytest, no bpy."""

from __future__ import annotations

import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from build_extension import PathPatterns, build  # noqa: E402

WHEEL = "torch-2.3.0-cp311-cp311-manylinux_2_28_x86_64.whl"


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "blender_manifest.toml", src)
    files = ["__init__.py", "imagen_addon/__init__.py", "imagen_addon/blender/logic.py",
             "imagen_addon/weights/index.json", "imagen_addon/blender/__pycache__/logic.cpython-311.pyc",
             "tests/test_x.py", "bench/b.py", "docs/d.md", "runs/r/log.txt", "datasets/a.png", "dist/old.zip",
             ".venv/bin/python", ".git/HEAD", "pyproject.toml", "imagen_addon.egg-info/PKG-INFO", "old.zip",
             "tools/build_extension.py", f"wheels/{WHEEL}", "wheels/README.md", "imagen_addon/runtime/tests.py",
             "imagen_addon/x.blend1"]
    for rel in files:
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return src


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


def test_lite_build(source, tmp_path):
    target = build(source, tmp_path / "out", "lite")
    assert target.name == "imagen-0.1.0-lite.zip"
    assert names(target) == ["blender_manifest.toml", "__init__.py", "imagen_addon/__init__.py",
                             "imagen_addon/blender/logic.py", "imagen_addon/runtime/tests.py",
                             "imagen_addon/weights/index.json"]
    with zipfile.ZipFile(target) as zf:
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert "wheels" not in manifest and manifest["id"] == "imagen"


def test_full_build_bundles_wheels(source, tmp_path):
    target = build(source, tmp_path / "out", "full")
    assert f"wheels/{WHEEL}" in names(target) and "wheels/README.md" not in names(target)
    with zipfile.ZipFile(target) as zf:
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert manifest["wheels"] == [f"./wheels/{WHEEL}"]


def test_full_build_needs_wheels(source, tmp_path):
    (source / "wheels" / WHEEL).unlink()
    with pytest.raises(SystemExit, match="needs the platform's wheels"):
        build(source, tmp_path / "out", "full")


def test_build_is_reproducible(source, tmp_path):
    a = build(source, tmp_path / "a", "lite").read_bytes()
    b = build(source, tmp_path / "b", "lite").read_bytes()
    assert a == b


def test_repository_manifest():
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert (manifest["schema_version"], manifest["id"], manifest["version"], manifest["type"]) == \
        ("1.0.0", "imagen", "0.1.0", "add-on")
    assert manifest["blender_version_min"] == "4.2.0" and manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert set(manifest["permissions"]) == {"files", "network"}
    assert all(len(v) <= 64 and v[-1].isalnum() for v in manifest["permissions"].values())
    assert len(manifest["tagline"]) <= 64 and manifest["tagline"][-1].isalnum()
    wheels = sorted(p.name for p in (ROOT / "wheels").glob("*.whl"))
    assert sorted(Path(w).name for w in manifest.get("wheels", [])) == wheels  # consistent with wheels/


@pytest.mark.parametrize("pattern, path, excluded", [
    ("__pycache__/", "a/__pycache__/", True),
    ("__pycache__/", "a/__pycache__", False),  # a file with that name is not a directory
    ("*.pyc", "a/b/c.pyc", True),
    (".*", ".git/", True),
    (".*", "a/.hidden", True),
    ("/tests/", "tests/", True),
    ("/tests/", "imagen_addon/tests/", False),
    ("/*.zip", "old.zip", True),
    ("/*.zip", "a/old.zip", False),
    ("*.blend[1-9]", "a/x.blend1", True),
    ("/imagen_addon/weights/**/*.tmp", "imagen_addon/weights/a/b/c.tmp", True),
    ("/imagen_addon/weights/**/*.tmp", "imagen_addon/weights/c.tmp", True),
    ("*.egg-info/", "imagen_addon.egg-info/", True),
])
def test_path_patterns(pattern, path, excluded):
    assert PathPatterns([pattern]).excluded(path) is excluded


def test_negated_pattern():
    patterns = PathPatterns(["*.json", "!keep.json"])
    assert patterns.excluded("a.json") and not patterns.excluded("keep.json")
