import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from imagen_addon.core.imagen import Imagen
from imagen_addon.train import checkpoints as ck
from imagen_addon.train.trainer import cpu_has_native_bf16, export_run, stage_plan, train

RED, BLUE = (200, 40, 40), (45, 85, 200)


def weights(run_dir):
    latest = ck.latest_checkpoint(run_dir)
    from safetensors.torch import load_file

    return {f: load_file(latest / f) for f in sorted(os.listdir(latest)) if f.endswith(".safetensors")}


def test_stage_plans(flat_colours, tmp_path, tiny_train_config):
    cfg = tiny_train_config(flat_colours, tmp_path, steps=[4, 2], schedule="interleaved")
    assert stage_plan(cfg) == [0, 0, 1, 0, 0, 1]
    cfg = tiny_train_config(flat_colours, tmp_path, steps=[2, 1], schedule="sequential")
    assert stage_plan(cfg) == [0, 0, 1]
    cfg = tiny_train_config(flat_colours, tmp_path, stages=[1], steps=[3])
    assert stage_plan(cfg) == [1, 1, 1]


def test_resume_is_exact(flat_colours, tmp_path, tiny_train_config):
    """N steps, stop, resume for N more == 2N steps in one go."""
    train(tiny_train_config(flat_colours, tmp_path / "a", steps=[12], stop_at=12), progress=False)
    assert ck.latest_checkpoint(tmp_path / "a").name == "step_00000012"
    train(tiny_train_config(flat_colours, tmp_path / "a", steps=[12]), resume=True, progress=False)
    train(tiny_train_config(flat_colours, tmp_path / "b", steps=[12]), progress=False)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            torch.testing.assert_close(a[name][key], b[name][key], rtol=1e-5, atol=1e-6)
    logged = [json.loads(line)["step"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert logged == sorted(logged) and logged[-1] == 24  # the log continues where the checkpoint was


def test_compiled_training_step_is_the_same_computation(flat_colours, tmp_path, tiny_train_config):
    """`compile` wraps the step in torch.compile ("eager" backend here: the graph capture without code generation,
    seconds on a CPU); checkpoints keep the plain parameter names and the weights match an uncompiled run."""
    train(tiny_train_config(flat_colours, tmp_path / "c", steps=[3], compile="eager"), progress=False)
    train(tiny_train_config(flat_colours, tmp_path / "p", steps=[3]), progress=False)
    c, p = weights(tmp_path / "c"), weights(tmp_path / "p")
    assert c.keys() == p.keys()
    for name in c:
        assert not [k for k in c[name] if "_orig_mod" in k]
        for key in c[name]:
            torch.testing.assert_close(c[name][key], p[name][key], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="compile must be one of"):
        tiny_train_config(flat_colours, tmp_path, compile="yes")


def test_config_json_written_before_step_zero_and_dry_run(flat_colours, tmp_path, tiny_train_config):
    from imagen_addon.cli import main

    cfg = tiny_train_config(flat_colours, tmp_path / "r")
    cfg.save(tmp_path / "cfg.json")
    assert main(["train", "--config", str(tmp_path / "cfg.json"), "--dry-run", "lr=1e-4"]) == 0
    assert not (tmp_path / "r").exists()
    assert main(["train", "--config", str(tmp_path / "cfg.json"), "nonsense=1"]) == 2


def test_cascade_trains_end_to_end_and_exports(flat_colours, tmp_path, tiny_train_config):
    """A tiny cascade learns two captions -> two flat colours in well under a minute; its export loads."""
    cfg = tiny_train_config(flat_colours, tmp_path / "run", steps=[400, 150], batch_size=16, sample_every_steps=550,
                            sample_prompts=["a red image", "a blue image"], sample_steps=5, threads=0)
    train(cfg, progress=False)
    assert (tmp_path / "run" / "loss.png").is_file() and (tmp_path / "run" / "samples" / "step_00000550.png").is_file()
    out = export_run(tmp_path / "run", tmp_path / "model")
    imagen = Imagen.from_pretrained(out)
    red, blue = imagen.generate(["a red image", "a blue image"], seed=0, steps=20, guidance_scale=3.0)
    mean_red = np.asarray(red, dtype=float).reshape(-1, 3).mean(0)
    mean_blue = np.asarray(blue, dtype=float).reshape(-1, 3).mean(0)
    assert np.linalg.norm(mean_red - RED) < 50, mean_red
    assert np.linalg.norm(mean_blue - BLUE) < 50, mean_blue


def test_sigkill_any_moment_resumes_from_complete_checkpoint(flat_colours, tmp_path, tiny_train_config):
    """Kill a run repeatedly at random moments (also mid-checkpoint); the latest checkpoint always loads."""
    cfg = tiny_train_config(flat_colours, tmp_path / "run", steps=[400], checkpoint_every_steps=2, keep_checkpoints=2)
    cfg.save(tmp_path / "cfg.json")
    rng = np.random.default_rng(0)
    cmd = [sys.executable, "-m", "imagen_addon.cli", "train", "--config", str(tmp_path / "cfg.json"), "--resume"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while ck.latest_checkpoint(tmp_path / "run") is None and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        latest = ck.latest_checkpoint(tmp_path / "run")
        assert latest is not None
        imagen = Imagen(cfg.imagen_config)
        opt = {k: torch.optim.AdamW(imagen.stages[k].parameters()) for k in (0, 1)}
        sch = {k: torch.optim.lr_scheduler.LambdaLR(opt[k], lambda n: 1.0) for k in (0, 1)}
        stages = {k: imagen.stages[k] for k in (0, 1)}
        assert ck.load_checkpoint(latest, stages, stages, opt, sch) == int(latest.name.split("_")[1])


def test_folder_with_bad_items_trains_with_warning(tmp_path, tiny_train_config):
    root = tmp_path / "data"
    root.mkdir()
    for i, colour in enumerate([RED, BLUE, RED]):
        Image.new("RGB", (40, 30), colour).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text("a red image" if colour == RED else "a blue image")
    (root / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    (root / "3.txt").write_text("a corrupt image")
    Image.new("RGB", (40, 30), RED).save(root / "4.png")
    (root / "4.txt").write_text("   ")
    (root / "notes.md").write_text("not an image")
    cfg = tiny_train_config(root, tmp_path / "run", steps=[4])
    with pytest.warns(UserWarning, match=r"skipped 3 item\(s\)"):
        train(cfg, progress=False)
    assert ck.latest_checkpoint(tmp_path / "run").name == "step_00000008"  # 4 steps per stage


def test_imagen_train_api(flat_colours, tmp_path):
    from imagen_addon.core.imagen import tiny_config

    imagen = Imagen(tiny_config())
    before = {k: v.clone() for k, v in imagen.state_dict().items()}
    run = imagen.train(flat_colours, run_dir=str(tmp_path / "run"), steps=[4], batch_size=4, sample_every_steps=0,
                       sr_crop=16)
    assert (run / "config.json").is_file()
    assert any(not torch.equal(before[k], v) for k, v in imagen.state_dict().items())
    assert not imagen.training


def test_sigterm_saves_a_checkpoint_and_resume_continues(flat_colours, tmp_path, tiny_train_config):
    cfg = tiny_train_config(flat_colours, tmp_path / "run", steps=[100000], checkpoint_every_steps=100000,
                            checkpoint_every_minutes=1000)
    cfg.save(tmp_path / "cfg.json")
    cmd = [sys.executable, "-m", "imagen_addon.cli", "train", "--config", str(tmp_path / "cfg.json"), "--resume"]
    proc = subprocess.Popen(cmd, env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    latest = ck.latest_checkpoint(tmp_path / "run")
    assert latest is not None and "stopped by signal" in out
    assert int(latest.name.split("_")[1]) >= 5  # the first metrics line is written at step 5


def _tiny_stage():
    from imagen_addon.core.stage import Stage, StageConfig
    from imagen_addon.core.unet import UNetConfig

    torch.manual_seed(0)
    stage = Stage(StageConfig(unet=UNetConfig(image_size=16, base_channels=16, channel_mults=(1, 2),
                                              num_res_blocks=(1, 1), cross_attn_resolutions=(8,), head_dim=8,
                                              groups=4, text_dim=12)))
    with torch.no_grad():  # zero-initialised output layers would leave most gradients zero
        for p in stage.parameters():
            p.normal_(0, 0.1)
    return stage


def _grads(stage, seed: int) -> None:
    g = torch.Generator().manual_seed(1)
    x, text = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1, torch.randn(4, 5, 12, generator=g)
    torch.manual_seed(seed)
    stage.loss(x, text, torch.ones(4, 5, dtype=torch.bool)).backward()


def _adam_steps(params: list, optimizer, n: int, start: int = 0) -> None:
    """n AdamW steps on the same pseudo-random gradients for any layout (Adam divides by |g|: where a gradient is
    ~0, float noise from another convolution order would flip whole steps, so the update is checked on its own)."""
    for i in range(start, start + n):
        g = torch.Generator().manual_seed(i)
        for p in params:
            p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=g))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_trainer_fast_paths_change_the_speed_not_the_maths():
    """channels_last weights give the plain gradients; fused AdamW on them is the plain AdamW update; a checkpoint
    written in one layout resumes in the other (optimizer state re-laid out like its parameter)."""
    import copy

    from imagen_addon.train.trainer import make_optimizer, match_state_layout

    plain = _tiny_stage()
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    _grads(plain, 0)
    _grads(fast, 0)
    for a, b in zip(plain.parameters(), fast.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)

    def adamw(params):
        return torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01, foreach=False)

    plain_params, fast_params = list(plain.parameters()), list(fast.parameters())
    opt_plain, opt_fast = adamw(plain_params), make_optimizer(fast_params, 1e-3, 0.01, "cpu")
    assert opt_fast.defaults["fused"]
    _adam_steps(plain_params, opt_plain, 3)
    _adam_steps(fast_params, opt_fast, 3)
    for a, b in zip(plain_params, fast_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    resumed = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    resumed_params = list(resumed.parameters())
    opt_resumed = make_optimizer(resumed_params, 1e-3, 0.01, "cpu")
    opt_resumed.load_state_dict(copy.deepcopy(opt_plain.state_dict()))  # NCHW state, channels_last weights
    conv = next(p for p in resumed_params if p.dim() == 4 and p.shape[1] > 1)
    assert opt_resumed.state[conv]["exp_avg"].stride() != conv.stride()
    match_state_layout(opt_resumed)
    assert opt_resumed.state[conv]["exp_avg"].stride() == conv.stride()
    _adam_steps(plain_params, opt_plain, 2, start=3)
    _adam_steps(resumed_params, opt_resumed, 2, start=3)
    for a, b in zip(plain_params, resumed_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_precision_choices(monkeypatch):
    """auto: bf16 autocast on a GPU, fp32 on any CPU; explicit choices pass through, fp16 on a CPU is a clear
    error, bf16 on a CPU without native bf16 a warning (and none on a CPU with it)."""
    import warnings

    from imagen_addon.train import trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.resolve_precision("auto", cpu=True) == "no"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert trainer.resolve_precision("bf16", cpu=True) == "bf16"
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    assert trainer.resolve_precision("auto", cpu=True) == "no"
    assert trainer.resolve_precision("no", cpu=True) == "no"
    assert trainer.resolve_precision("auto", cpu=False) == "bf16"
    assert trainer.resolve_precision("fp16", cpu=False) == "fp16"
    with pytest.warns(UserWarning, match="no native bf16"):
        assert trainer.resolve_precision("bf16", cpu=True) == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        trainer.resolve_precision("fp16", cpu=True)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_training_on_cpu_follows_fp32(flat_colours, tmp_path, tiny_train_config):
    """The same 20 steps in bf16 autocast and in fp32: the losses agree to bf16's precision and the weights stay
    fp32 (autocast changes the arithmetic of the forward pass, not the parameters or the optimizer)."""
    losses = {}
    for precision in ("bf16", "no"):
        run = tmp_path / precision
        train(tiny_train_config(flat_colours, run, steps=[20], mixed_precision=precision), progress=False)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[precision] = np.array([r["loss"] for r in rows])
        assert all(t.dtype == torch.float32 for t in weights(run)["stage_0.safetensors"].values())
    assert np.isfinite(losses["bf16"]).all()
    np.testing.assert_allclose(losses["bf16"], losses["no"], rtol=0.1)
