"""tools/demo.py (`make demo`) end to end with a tiny model and a small render, and its expected failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tools" / "demo.py"


def _demo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMO), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(ROOT))


def test_demo_renders_the_scene(real_bpy, tiny_model_dir, tmp_path):
    from PIL import Image, ImageStat

    out = tmp_path / "out" / "demo.png"
    proc = _demo("--model", str(tiny_model_dir), "--out", str(out), "--size", "96x54", "--samples", "4",
                 "--steps", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for line in ("runtime start:", "sky panorama:", "seamless texture:", "render:", "Runtime stopped", str(out)):
        assert line in proc.stdout, proc.stdout
    with Image.open(out) as image:
        assert image.size == (96, 54)
        stddev = ImageStat.Stat(image.convert("RGB")).stddev
    assert max(stddev) > 5, f"the render looks blank (per-channel stddev {stddev})"
    with Image.open(tmp_path / "out" / "demo_sky.png") as sky, Image.open(tmp_path / "out" / "demo_texture.png") as tex:
        assert sky.width == 2 * sky.height and tex.width == tex.height  # a 2:1 panorama, a square texture


def test_missing_model_is_one_line(tmp_path):
    proc = _demo("--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "demo.png"), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("demo: error:") and "is not an Imagen model folder" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_runtime_that_fails_to_start_is_reported_without_traceback(real_bpy, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "imagen.json").write_text('{"stages": ["stage_0"]}')  # no stage folder: the runtime exits
    proc = _demo("--model", str(broken), "--out", str(tmp_path / "demo.png"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "demo: error: the runtime did not start" in proc.stderr and "could not load the model" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "demo.png").exists()


def test_launcher_passes_the_bundled_model_folder(monkeypatch, tmp_path):
    """The demo's default (no --model) relies on the launcher naming weights/default, the bundled model."""
    from imagen_addon.runtime import launcher

    assert launcher.BUNDLED_MODEL == ROOT / "imagen_addon" / "weights" / "default"
    monkeypatch.setattr(launcher, "BUNDLED_MODEL", tmp_path / "default")
    runtime = launcher.RuntimeLauncher(tmp_path / "state")
    assert runtime.model_path() == "" and "--model" not in runtime.command(tmp_path / "token")
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "imagen.json").write_text("{}")
    assert runtime.model_path() == str(tmp_path / "default")
    assert runtime.command(tmp_path / "token")[3:5] == ["--model", str(tmp_path / "default")]


def test_stall_benchmark_replaces_only_its_section(tmp_path):
    """bench/blender_stall.py (built on tools/demo.py) rewrites only its markers' part of BENCHMARKS.md."""
    sys.path.insert(0, str(ROOT / "bench"))
    import blender_stall

    path = tmp_path / "BENCHMARKS.md"
    blender_stall.write_section(path, f"{blender_stall.START}\nfirst\n{blender_stall.END}")
    assert path.read_text().startswith("# Benchmarks\n") and "first" in path.read_text()
    path.write_text(path.read_text().replace("# Benchmarks\n", "# Benchmarks\nmine\n") + "\n## after\nkept\n")
    blender_stall.write_section(path, f"{blender_stall.START}\nsecond\n{blender_stall.END}")
    text = path.read_text()
    assert "mine" in text and "## after\nkept" in text and "second" in text and "first" not in text
    assert text.count(blender_stall.START) == 1 and blender_stall.percentile([3, 1, 2], 0.5) == 2
