"""Smoke runs of the benchmark scripts, our side only, on tiny inputs: they run and report; no timing assertions.
The peer (imagen-pytorch in build/peer-venv) is not needed."""

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import end_to_end  # noqa: E402
import fast_paths  # noqa: E402
import guided_sampling  # noqa: E402
import unet_step  # noqa: E402
from _common import count_flops, markdown_table, ratio_row, stats  # noqa: E402


@pytest.fixture(autouse=True)
def keep_thread_count():
    """The scripts set torch's thread count for the whole process; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_stats_and_table():
    assert stats([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "n": 3}
    row = ratio_row("case", [1.0, 2.0], [3.0, 4.0])
    assert row[-2:] == ["3.00x", "2.33x"]  # peer/ours: min 3/1, median 3.5/1.5
    assert ratio_row("case", [1.0], None)[-1] == "-"
    assert markdown_table(["a", "b"], [["1", "2"]]).splitlines()[1] == "|---|---|"


def test_unet_step_ours_only(tmp_path, capsys):
    out = tmp_path / "unet.json"
    result = unet_step.main(["--no-peer", "--sizes", "16", "--batches", "2", "--reps", "1", "--width", "16",
                             "--threads", "1", "--json", str(out)])
    assert [r["case"] for r in result["results"]] == ["train 16px batch 2", "forward 16px batch 2"]
    assert json.loads(out.read_text())["bench"] == "unet_step"
    assert "| train 16px batch 2 |" in capsys.readouterr().out
    train, fwd = (r["ours_flops"] for r in result["results"])
    assert 2.5 * fwd < train < 3.1 * fwd  # backward costs about twice the forward (no input grad for the stem)


def test_count_flops_of_a_convolution():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(5, 4, 3, 3)
    assert count_flops(lambda: torch.nn.functional.conv2d(x, w, padding=1)) == 2 * 2 * 8 * 8 * 5 * 4 * 9


def test_peer_spec_mirrors_our_layout():
    cfg = unet_step.our_config(32)
    ours, plain = unet_step.Ours(cfg, "cpu", "fp32"), unet_step.Ours(cfg, "cpu", "fp32", fused=False)
    assert sum(p.numel() for p in ours.stage.parameters()) == 7_218_579
    conv = next(p for p in ours.stage.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] == 3)
    assert conv.is_contiguous(memory_format=torch.channels_last) and ours.opt.defaults["fused"]  # as the trainer
    assert not plain.opt.defaults["fused"]
    assert cfg.cross_attn_resolutions == (16, 8) and cfg.self_attn and cfg.channel_mults == (1, 2, 4)
    spec = unet_step.peer_spec(cfg, 1000, 16)
    assert spec["levels"] == 3 and spec["res_blocks"] == [1, 2, 3] and spec["text_len"] == 16
    assert spec["heads"] * spec["head_dim"] == cfg.base_channels * 4  # lowest level's width


def test_guided_sampling_ours_only():
    result = guided_sampling.main(["--no-peer", "--sizes", "16", "--steps", "2", "--reps", "1", "--width", "16",
                                   "--threads", "1"])
    assert len(result["results"][0]["ours"]) == 1


def test_end_to_end_on_tiny_model(tiny_model_dir, capsys):
    result = end_to_end.main(["--model", str(tiny_model_dir), "--cases", "dpmpp:2", "ddim:1:g5,1", "--reps", "1",
                              "--no-rss", "--threads", "1"])
    assert [r["case"] for r in result["results"]] == ["dpmpp, 2 steps", "ddim, 1 steps, guidance 5/1"]
    assert end_to_end.parse_case("default") == ("default (dpmpp, 20 steps)", {})
    assert "s/image" in capsys.readouterr().out


def test_end_to_end_peak_memory_child(tiny_model_dir, capsys):
    end_to_end.main(["--model", str(tiny_model_dir), "--child-rss", "--child-steps", "1", "--threads", "1"])
    mem = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert mem["peak_rss_mb"] >= mem["peak_rss_after_load_mb"] > 0


def test_end_to_end_without_model_says_how_to_get_one(tmp_path):
    with pytest.raises(SystemExit, match="imagen export"):
        end_to_end.resolve_model(str(tmp_path))


def test_fast_path_variants_compute_the_same(tiny_imagen):
    """The 'off' variants measured against ours must be the same computation, else the comparison means nothing."""
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    mask = torch.rand(2, 1, 1, 10) > 0.3
    mask[..., 0] = True
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(fast_paths.manual_attention(q, k, v, attn_mask=mask), ref, atol=1e-5)

    from imagen_addon.core.unet import PadConv2d

    conv = PadConv2d(4, 6, 3, stride=2)
    x = torch.randn(1, 4, 9, 10)
    for tiling in ("none", "x", "xy"):
        conv.tiling = tiling
        assert torch.allclose(fast_paths.conv_explicit_padding(conv, x), conv(x), atol=1e-6), tiling


def test_fast_paths_run_on_tiny_model(tiny_imagen):
    torch.set_num_threads(1)  # restored by keep_thread_count
    only = {"sdpa", "inference_mode", "padding", "channels_last", "batched_guidance"}
    rows = list(fast_paths.cases(tiny_imagen, only, reps=1))
    assert {r[0].split(" ")[0] for r in rows} >= {"F.scaled_dot_product_attention", "torch.inference_mode"}
    assert all(len(r[2]) == len(r[3]) == 1 for r in rows)


def test_fast_paths_winograd_training_case_runs():
    """The Winograd on/off training-step case, at a size small enough for CI (there it mostly takes the direct path:
    timing is bench/fast_paths.py's job, correctness tests/core/test_winograd.py's)."""
    torch.set_num_threads(1)  # restored by keep_thread_count
    try:
        [(name, where, t_off, t_on, _)] = list(fast_paths.winograd_training(reps=1, sizes=(16,), batch=4))
    finally:
        torch.set_flush_denormal(False)   # the case sets it, as the trainer does
    assert name.startswith("3x3 convs") and where == "training step, 16px batch 4"
    assert len(t_off) == len(t_on) == 1 and min(t_off + t_on) > 0


def test_train_levers_ours_only(tmp_path, capsys):
    import train_levers

    result = train_levers.main(["--size", "16", "--batch", "2", "--width", "16", "--reps", "1", "--threads", "1",
                                "--json", str(tmp_path / "levers.json")])
    assert set(result["results"]) == set(train_levers.VARIANTS) and all(result["results"].values())
    assert "| both (the trainer) |" in capsys.readouterr().out


def test_missing_peer_interpreter_says_how_to_get_one(monkeypatch):
    """The peer's interpreter is configurable (IMAGEN_BENCH_PEER_PYTHON, for the GPU machine); a missing one is a
    clear message, not a traceback from subprocess."""
    import _common

    monkeypatch.setattr(_common, "PEER_PYTHON", Path("/nonexistent/peer/python"))
    with pytest.raises(SystemExit, match="peer_setup.sh"):
        _common.Peer(1, "cpu", "fp32")


def test_gpu_device_script_dry_run_on_cpu(tmp_path):
    """bench/gpu_device.sh is the one prepared run for a session that is lent a GPU (15 minutes, no second try):
    its CPU dry run must work end to end. Without the peer it times ours alone and says so."""
    import os
    import subprocess

    env = dict(os.environ, BENCH_WHEELS="", BENCH_DEVICE="cpu", BENCH_DTYPE="fp32", BENCH_REPS="1",
               BENCH_THREADS="1", GPU_SIZES="16", BENCH_PYTHON=sys.executable, OUT=str(tmp_path),
               IMAGEN_BENCH_PEER_PYTHON="/nonexistent/peer/python",
               IMAGEN_BENCH_PEER_HF_HOME=str(tmp_path / "peer-hf"))
    subprocess.run(["bash", str(BENCH / "gpu_device.sh")], env=env, check=True, capture_output=True, timeout=300)
    log = (tmp_path / "gpu_log.txt").read_text()
    assert "time ours only" in log and "== done" in log
    assert "train 16px batch 32" in (tmp_path / "unet_step_gpu.md").read_text()
    assert "16px, 50 steps" in (tmp_path / "guided_gpu.md").read_text()
    assert json.loads((tmp_path / "unet_step_gpu.json").read_text())["results"]
    assert (tmp_path / "peer-hf" / "hub" / "models--google--t5-v1_1-base").is_dir()
