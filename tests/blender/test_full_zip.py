"""The self-contained ("full") extension for linux-x64: the wheels it bundles are enough to run the runtime.

The test fetches the runtime's wheels (`tools/build_extension.py --fetch`: pip download of CPU torch 2.13,
transformers, fastapi, ..., about 330 MB), builds the full zip, and installs it into real Blender (bpy 5.0.1 as a
module, in its own process with a temporary user folder) with `bpy.ops.extensions.package_install_files`, which
unpacks the wheels into the extensions' site-packages. In that Blender process it checks that the add-on hands
this site-packages to the runtime, then starts the add-on's launcher with this venv's Python under `-S` (no site:
none of the venv's packages) and PYTHONPATH = the installed add-on + that site-packages only, generates one image
with a tiny model and stops it. torch is checked to be loaded from the extension's site-packages.

About a minute and 2 GB of temporary disk (removed afterwards): marked `slow`; IMAGEN_TEST_FULL_ZIP=0 skips it.
Skipped, with the reason, when the wheels cannot be fetched (no package registry) or `import bpy` fails.

    python test_full_zip.py ZIP MODEL_DIR REPORT_JSON    # the in-Blender part (run by the test)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

PKG = "bl_ext.user_default.imagen"


# --- in Blender (this file run as a script) ---------------------------------------------------------------------


def bpy_main(zip_path: str, model_dir: str, report_path: str) -> None:
    import bpy

    report: dict = {}
    started = time.perf_counter()
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    report["install_s"] = time.perf_counter() - started
    assert result == {"FINISHED"} and PKG in bpy.context.preferences.addons, result
    site = os.path.join(bpy.utils.user_resource("EXTENSIONS"), ".local", "lib",
                        "python{}.{}".format(*sys.version_info[:2]), "site-packages")
    assert os.path.isdir(os.path.join(site, "torch")), f"Blender did not unpack the wheels into {site}"
    config = sys.modules[f"{PKG}.imagen_addon.blender.preferences"].runtime_config(bpy.context)
    assert site in config.extra_paths, f"the add-on does not hand {site} to the runtime: {config.extra_paths}"

    launcher_mod = sys.modules[f"{PKG}.imagen_addon.runtime.launcher"]
    worker = sys.modules[f"{PKG}.imagen_addon.blender.worker"]
    home = Path(os.environ["HOME"])
    python = home / "python-without-site"  # this interpreter without any site-packages of its own
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    launcher = launcher_mod.RuntimeLauncher(home / "runtime", python=str(python), model_dir=model_dir,
                                            extra_paths=[site], ready_timeout=300)
    assert str(launcher_mod.ADDON_ROOT).startswith(bpy.utils.user_resource("EXTENSIONS")), launcher_mod.ADDON_ROOT
    started = time.perf_counter()
    try:
        info = launcher.start()
        report["runtime_start_s"] = time.perf_counter() - started
        maps = Path(f"/proc/{info.pid}/maps").read_text()
        report["libtorch"] = sorted({line.split()[-1] for line in maps.splitlines() if "libtorch_cpu" in line})
        started = time.perf_counter()
        job = worker.run_job_sync(info.client(timeout=120), {"prompt": "a red brick wall", "seed": 3, "steps": 4})
        report["generate_s"] = time.perf_counter() - started
        report["png_bytes"], report["result"] = len(job.png), job.result
        assert job.png.startswith(b"\x89PNG"), job.png[:16]
    except Exception as err:
        report["log"] = launcher.log_tail(4000)
        raise AssertionError(f"{err}\n--- runtime log ---\n{report['log']}") from None
    finally:
        report["stopped"] = launcher.stop()
        Path(report_path).write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    bpy_main(*sys.argv[-3:])
    sys.exit(0)


# --- pytest ---------------------------------------------------------------------------------------------------

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import build_extension  # noqa: E402


@pytest.mark.parametrize("names, platforms", [
    (["a-1.0-py3-none-any.whl"], []),
    (["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "a-1-py3-none-any.whl"], ["linux-x64"]),
    (["hf_xet-1.8.0-cp38-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"], ["linux-x64"]),
    (["numpy-1.26.4-cp311-cp311-win_amd64.whl"], ["windows-x64"]),
    (["numpy-1.26.4-cp311-cp311-macosx_11_0_arm64.whl"], ["macos-arm64"]),
    (["x-1-cp311-cp311-manylinux2014_aarch64.whl"], ["linux-arm64"]),
])
def test_wheel_platforms(names, platforms):
    assert build_extension.wheel_platforms(names) == platforms


def test_wheels_of_two_platforms_are_refused():
    with pytest.raises(SystemExit, match="several platforms"):
        build_extension.wheel_platforms(["a-1-cp311-cp311-win_amd64.whl", "a-1-cp311-cp311-linux_x86_64.whl"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """About 2 GB in 23,000 files: in memory (/dev/shm) when there is room, as unpacking and deleting that many
    files on a busy disk takes minutes; removed afterwards."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 6e9:
        path = Path(tempfile.mkdtemp(prefix="imagen-full-zip-", dir=shm))
    else:
        path = tmp_path_factory.mktemp("full-zip")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def full_zip(workdir, real_bpy) -> Path:
    started = time.perf_counter()
    try:
        build_extension.fetch_wheels(workdir / "wheels")
    except SystemExit as err:
        pytest.skip(f"the runtime's wheels could not be fetched (a package registry is needed): {err}")
    fetched = time.perf_counter()
    target = build_extension.build(ROOT, workdir / "dist", "full", wheels_dir=workdir / "wheels")
    print(f"fetch {fetched - started:.1f} s, build {time.perf_counter() - fetched:.1f} s")
    return target


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("IMAGEN_TEST_FULL_ZIP") == "0", reason="IMAGEN_TEST_FULL_ZIP=0")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the full build bundles linux-x64 wheels")
def test_full_zip_runs_the_runtime_from_its_own_wheels(full_zip, workdir, tiny_model_dir, record_property):
    with zipfile.ZipFile(full_zip) as zf:
        names, manifest = zf.namelist(), tomllib.loads(zf.read("blender_manifest.toml").decode("utf-8"))
    assert manifest["platforms"] == ["linux-x64"]
    assert any(n.startswith("wheels/torch-2.13.0+cpu") for n in names) and sorted(manifest["wheels"]) == sorted(
        f"./{n}" for n in names if n.endswith(".whl"))

    home = workdir / "blender-user"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BLENDER_USER"))}
    env.update(BLENDER_USER_RESOURCES=str(home), HOME=str(home), XDG_DATA_HOME=str(home / "data"))
    report_path = workdir / "report.json"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, str(full_zip), str(tiny_model_dir), str(report_path)],
                          env=env, cwd=str(home), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and report_path.exists(), f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                                          f"{proc.stderr[-5000:]}"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    site = home / "extensions" / ".local" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert report["libtorch"] and all(p.startswith(str(site)) for p in report["libtorch"]), report["libtorch"]
    assert report["png_bytes"] > 100 and report["result"]["seed"] == 3 and report["stopped"]
    timings = {k: round(v, 1) for k, v in report.items() if k.endswith("_s")}
    timings["blender_process_s"] = round(time.perf_counter() - started, 1)
    record_property("full_zip", {"zip_mb": round(full_zip.stat().st_size / 1e6, 1), **timings})
    print(f"full zip {full_zip.stat().st_size / 1e6:.0f} MB; {timings}")
