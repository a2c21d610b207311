"""Refusals and faults of the extension inside real Blender: meshes without UVs, non-mesh objects, a read-only or
impossible output folder, and the extension disabled during a generation (no runtime process left behind).

One subprocess runs tests/reliability/bpy_reliability_checks.py (bpy is global state, importable once per process)
with a temporary Blender user folder. Skipped when `import bpy` fails. Refusals checked by tests/blender instead:
empty prompt, no selection, no camera, runtime down, online access off (tests/blender/test_extension.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHECKS = ["install", "build_scene", "object_without_uvs", "non_mesh_objects", "read_only_output_folder",
          "output_folder_cannot_be_created", "disable_during_generation", "disable_while_connecting"]


def read_only_folder(path: Path):
    """Make `path` a folder this process cannot write to: mode 0555, or (root ignores modes) a read-only tmpfs.
    Returns an undo function, or None when neither works here."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    if mount.returncode != 0:
        return None
    return lambda: subprocess.run(["umount", str(path)], check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory, real_bpy) -> dict:
    sys.path.insert(0, str(ROOT / "tools"))
    import build_extension

    extension_zip = build_extension.build(ROOT, tmp_path_factory.mktemp("dist"), "lite")
    home = tmp_path_factory.mktemp("blender-user")
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(HERE)}
    for var in ("BLENDER_USER_CONFIG", "BLENDER_USER_SCRIPTS", "BLENDER_USER_DATAFILES", "BLENDER_USER_EXTENSIONS"):
        env[var] = str(home / var.lower())
    env["BLENDER_USER_RESOURCES"] = str(home)
    undo = read_only_folder(home / "read-only")
    if undo is not None:
        env["IMAGEN_TEST_RO_DIR"] = str(home / "read-only")
    out = home / "report.json"
    try:
        proc = subprocess.run([sys.executable, str(HERE / "bpy_reliability_checks.py"), str(extension_zip), str(out)],
                              env=env, capture_output=True, text=True, timeout=600, cwd=str(home))
    finally:
        if undo is not None:
            undo()
    if not out.exists():
        pytest.fail(f"the bpy checks crashed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", CHECKS)
def test_in_blender(report, name):
    entry = report.get(name)
    assert entry is not None, f"check {name} did not run (an earlier check stopped the run)"
    if entry.get("skipped"):
        pytest.skip(entry["skipped"])
    assert entry["ok"], entry["detail"]
    print(f"\nRELIABILITY blender {name}: {json.dumps(entry.get('detail'))[:3000]}")
