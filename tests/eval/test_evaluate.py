"""`imagen eval` end to end with the untrained tiny cascade, and its pieces: prompts, settings, the report."""

from __future__ import annotations

import json

import pytest

from imagen_addon.data.heldout import is_held_out
from imagen_addon.eval import evaluate as E
from imagen_addon.eval.judge import object_visible


def test_heldout_prompts_are_deterministic_distinct_and_held_out():
    a = E.heldout_records("landscape", 20, seed=3)
    assert a == E.heldout_records("landscape", 20, seed=3)
    assert a != E.heldout_records("landscape", 20, seed=4)
    assert len({json.dumps(r, sort_keys=True) for r, _ in a}) == 20
    assert all(is_held_out(r) and object_visible(r) and text for r, text in a)
    mats = E.heldout_records("material", 10, seed=3)
    assert len(mats) == 10 and all(r["kind"] == "material" and is_held_out(r) for r, _ in mats)


def test_settings_parse_with_readable_errors():
    assert E.parse_settings("ancestral:250, ddim:50,dpmpp:10") == [
        E.Setting("ancestral", 250), E.Setting("ddim", 50), E.Setting("dpmpp", 10)]
    assert E.Setting("dpmpp", 20).label == "DPM-Solver++ 20"
    for bad in ("", "euler:10", "ddim", "ddim:0", "ddim:x"):
        with pytest.raises(ValueError):
            E.parse_settings(bad)


def test_mean_standard_error_closed_form():
    verdicts = [{"sky": True, "sun": True}, {"sky": True}, {"sky": False}, {"sky": True, "sun": False}]
    acc, n = E.accuracy(verdicts), E.checks(verdicts)
    assert acc == {"sky": 0.75, "sun": 0.5} and n == {"sky": 4, "sun": 2}
    # shrunk shares: sky (3 + 1) / 6, sun (1 + 1) / 4; s.e. = sqrt(sum p (1 - p) / n) / K
    p_sky, p_sun = 4 / 6, 2 / 4
    expected = ((p_sky * (1 - p_sky) / 4 + p_sun * (1 - p_sun) / 2) ** 0.5) / 2
    assert E.mean_standard_error(acc, n) == pytest.approx(expected, abs=1e-4)
    assert E.mean_standard_error({}, {}) is None


def test_cli_rejects_bad_options(tmp_path, capsys):
    assert E.cli_main(["--out", str(tmp_path), "--settings", "euler:5"]) == 2
    assert "SAMPLER:STEPS" in capsys.readouterr().err
    assert E.cli_main(["--out", str(tmp_path), "--count", "x"]) == 2
    assert not (tmp_path / "results.json").exists()


def test_write_benchmarks_replaces_only_its_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    E.write_benchmarks(path, "first")
    assert path.read_text() == f"{E.START}\nfirst\n{E.END}\n"
    path.write_text(f"# Bench\n\nintro\n\n{E.START}\nold\n{E.END}\n\n## Other\nkeep me\n")
    E.write_benchmarks(path, "new table\n")
    assert path.read_text() == f"# Bench\n\nintro\n\n{E.START}\nnew table\n{E.END}\n\n## Other\nkeep me\n"
    path.write_text("# Bench\n")
    E.write_benchmarks(path, "added")
    assert path.read_text() == f"# Bench\n\n{E.START}\nadded\n{E.END}\n"


def test_eval_runs_end_to_end_with_the_tiny_model(tiny_model_dir, tmp_path):
    out, bench = tmp_path / "eval", tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\nhand-written text\n")
    status = E.cli_main(["--model", str(tiny_model_dir), "--out", str(out), "--count", "3,2", "--settings",
                         "dpmpp:2", "--sr-steps", "1", "--panoramas", "1", "--grid-rows", "3", "--grid-seeds", "2",
                         "--write-benchmarks", str(bench), "--quiet"])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    assert results["counts"] == {"landscape": 3, "material": 2} and len(results["prompts"]) == 5
    [row] = results["settings"]
    assert row["label"] == "DPM-Solver++ 2" and row["seconds_per_image"] > 0
    assert {"sky", "ground", "colors", "pattern", "seamless"} <= set(row["accuracy"])
    assert all(0 <= v <= 1 for v in row["accuracy"].values())
    assert row["fd"]["all"] is not None and row["fd"]["all"] >= 0
    assert results["checks"]["sky"] == 3 and 0 < row["mean_accuracy_se"] < 0.5
    assert row["seam"]["material_x"] is not None and row["seam"]["material_y_same_phase"] is not None
    assert results["seam_period"] == 4 and results["seam_all_settings"]["count"] == 2  # tiny cascade: 16 -> 32 px
    assert results["sr"] == {"sampler": "dpmpp", "steps": 1, "note": "every setting's SR stages use this"}
    assert results["judge"]["real_mean_accuracy"] >= 0.9
    assert set(results["seams"]["panorama"]) == {"tiled", "tiled_same_phase", "untiled_control", "procedural",
                                                          "count"}
    assert set(results["seams"]["material_tiled"]) == set(row["seam"]) | {"count"}
    table = (out / "table.md").read_text()
    assert "same 4-px phase" in table and "All 2 tiled materials of every setting" in table
    assert "DPM-Solver++ 2" in table and "super-resolution stage runs DPM-Solver++ with 1 steps" in table
    for name in ("grid.png", "accuracy_vs_steps.png"):
        assert (out / name).stat().st_size > 1000
    text = bench.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written text\n") and E.START in text and E.END in text
    assert "accuracy_vs_steps.png" in text
