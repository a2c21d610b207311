"""The training loop for any stage of a cascade (Imagen Sec. 4.1 / App. F: AdamW, warmup, EMA, clipping).

The same code runs on one CPU and on many GPUs (`accelerate launch -m imagen_addon.cli train ...`): accelerate
places the models, wraps them in DDP and handles bf16 autocast on GPU. The base stage trains on whole images, SR
stages on random crops of the high-resolution image with the low-resolution input made by downsampling (plus
noise conditioning augmentation, in `Stage.loss`). Text embeddings come from an on-disk cache: the frozen encoder
never runs in the loop.

Randomness is a pure function of (seed, global step, process): resuming from a checkpoint continues exactly.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..core.imagen import Imagen
from ..core.stage import StageLoss, downsample
from ..data.embeddings import TextEmbeddingCache
from ..data.folder import load_buckets
from . import checkpoints as ck
from .config import TrainConfig
from .report import plot_loss, sample_grid


def stage_plan(cfg: TrainConfig) -> list[int]:
    """Which stage each global step trains: sequential, or interleaved in proportion to each stage's steps."""
    steps = cfg.stage_steps
    if cfg.schedule == "sequential":
        return [k for k in cfg.stage_ids for _ in range(steps[k])]
    done = {k: 0 for k in steps}
    plan = []
    for _ in range(sum(steps.values())):
        k = min((k for k in steps if done[k] < steps[k]), key=lambda k: ((done[k] + 1) / steps[k], k))
        done[k] += 1
        plan.append(k)
    return plan


class Batches:
    """Random batches for one stage from decoded buckets; a batch never mixes shapes or padding modes."""

    def __init__(self, buckets, texts: TextEmbeddingCache, stage_cfg, crop: int):
        self.buckets, self.texts, self.cfg, self.crop = buckets, texts, stage_cfg, crop
        sizes = np.array([len(b.captions) for b in buckets], dtype=np.float64)
        self.p = sizes / sizes.sum()

    def sample(self, rng: np.random.Generator, batch_size: int, device):
        bucket = self.buckets[rng.choice(len(self.buckets), p=self.p)]
        idx = rng.integers(0, len(bucket.captions), batch_size)
        images = bucket.images[idx]
        tiling = bucket.tiling
        if self.cfg.is_sr and self.crop and self.crop < min(images.shape[1:3]):
            h, w = images.shape[1:3]
            s = self.cfg.scale
            y = rng.integers(0, (h - self.crop) // s + 1) * s
            x = rng.integers(0, (w - self.crop) // s + 1) * s
            images = images[:, y:y + self.crop, x:x + self.crop]
            tiling = "none"  # a crop no longer wraps
        x0 = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        text, mask = self.texts.lookup([bucket.captions[i] for i in idx])
        lowres = None
        if self.cfg.is_sr:
            h, w = x0.shape[-2:]
            lowres = downsample(x0, (h // self.cfg.scale, w // self.cfg.scale))
        return x0, text.to(device), mask.to(device), lowres, tiling


class _StopOnSignal:
    """SIGTERM / SIGINT finish the current step, write a checkpoint and end the run (resumable, nothing lost)."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def make_optimizer(params, lr: float, weight_decay: float, device) -> torch.optim.AdamW:
    """AdamW with Imagen's betas (App. F), fused into one kernel per step where torch has one for the device (CPU
    and CUDA; else torch's default). On 2 CPU cores fused adds 0-2 % to a training step (the optimizer is under 2 %
    of it; `bench/train_levers.py`), on a GPU it saves a kernel launch per tensor."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay, fused=fused)


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter optimizer state tensor its parameter's memory layout. A checkpoint written by a run
    whose weights were in another layout (NCHW before channels_last) loads with the old strides, and fused kernels
    walk all the tensors of a parameter in one memory order."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach().to(e.dtype), 1.0 - decay)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512-BF16 or AMX). Without them bf16 is emulated and many
    times slower than fp32; with them a bf16-autocast U-Net training step is about 1.7x faster (BENCHMARKS.md)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(requested: str, cpu: bool) -> str:
    """accelerate's `mixed_precision` for a run. "auto": bf16 autocast on a GPU, fp32 ("no") on a CPU, even one
    with native bf16: there bf16 trains 1.15x-1.37x more images per second with a loss 2-4 % behind fp32's per step
    (3,000 base-stage steps; BENCHMARKS.md), so it is a choice, not the default. fp16 needs a GPU; bf16 on a CPU
    without native bf16 runs, with a warning."""
    if requested == "auto":
        return "no" if cpu else "bf16"
    if cpu and requested == "fp16":
        raise ValueError("mixed_precision=fp16 needs a GPU; on a CPU use bf16 (with native bf16 support) or no")
    if cpu and requested == "bf16" and not cpu_has_native_bf16():
        warnings.warn("this CPU has no native bf16 (AVX512-BF16 / AMX): bf16 autocast will be many times slower "
                      "than fp32; mixed_precision=no trains in fp32", stacklevel=2)
    return requested


def train(cfg: TrainConfig, resume: bool = False, imagen: Imagen | None = None, progress: bool = True) -> Path:
    """Run (or resume) a training run; returns the run folder. `imagen`: train this instance in place."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Flush denormals to zero while training: tiny AdamW second moments otherwise fall into the denormal range,
    # which x86 CPUs process 10-100x slower. Process-wide state, so it is switched off again at the end.
    torch.set_flush_denormal(True)
    try:
        return _train(cfg, resume, imagen, progress)
    finally:
        torch.set_flush_denormal(False)


def _train(cfg: TrainConfig, resume: bool, imagen: Imagen | None, progress: bool) -> Path:
    from accelerate import Accelerator  # noqa: PLC0415
    from accelerate.state import AcceleratorState  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    precision = resolve_precision(cfg.mixed_precision, cpu)
    # accelerate keeps one precision per process and refuses another; a second run in the same process (the
    # `Imagen.train` API, a notebook) may ask for one, so that state is reset (the process group is kept).
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=cpu, mixed_precision=precision)
    run_dir = Path(cfg.run_dir)
    main = accelerator.is_main_process
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume and (run_dir / "config.json").is_file():
            saved = json.loads((run_dir / "config.json").read_text())
            if saved.get("model") != json.loads(json.dumps(cfg.model)):
                raise ValueError(f"{run_dir}/config.json has another model config: resume with the same model")
        cfg.save(run_dir / "config.json")  # the resolved options, before step 0
        ck.clean_partial(run_dir)

    caller_model = imagen is not None
    if imagen is None:
        torch.manual_seed(cfg.seed)  # the initial weights are part of the run's recipe
        imagen = Imagen.from_pretrained(cfg.init_from) if cfg.init_from else Imagen(cfg.imagen_config)
    imagen.train(True)
    # channels_last: oneDNN / cuDNN convolutions run without layout reorders (1.06x-1.09x per CPU training step,
    # `bench/train_levers.py`); saved weights are contiguous whatever the layout in memory.
    imagen.to(memory_format=torch.channels_last)
    ema_imagen = copy.deepcopy(imagen).eval().requires_grad_(False)
    encoder = imagen.text_encoder
    plan = stage_plan(cfg)
    ids = cfg.stage_ids
    stages = {k: imagen.stages[k] for k in ids}
    ema = {k: ema_imagen.stages[k] for k in ids}
    optimizers = {k: make_optimizer(stages[k].parameters(), cfg.lr, cfg.weight_decay, accelerator.device)
                  for k in ids}
    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(
        optimizers[k], lambda n: min(1.0, (n + 1) / max(1, cfg.warmup_steps))) for k in ids}

    start = 0
    latest = ck.latest_checkpoint(run_dir) if resume else None
    if latest is not None:
        start = ck.load_checkpoint(latest, stages, ema, optimizers, schedulers)
        for optimizer in optimizers.values():
            match_state_layout(optimizer)
        accelerator.print(f"resumed from {latest} at step {start}")
    losses = {k: accelerator.prepare(StageLoss(stages[k])) for k in ids}
    if cfg.compile:  # compiles the step's forward (and its backward); weights and checkpoints are unchanged
        losses = {k: torch.compile(loss, backend=cfg.compile) for k, loss in losses.items()}
    for k in ids:
        optimizers[k] = accelerator.prepare(optimizers[k])
    for e in ema.values():
        e.to(accelerator.device)

    batches = {}
    for k in ids:
        scfg = imagen.config.stages[k]
        buckets = load_buckets(cfg.data, scfg.image_size, progress=progress and main)
        texts = TextEmbeddingCache.build([c for b in buckets for c in b.captions], encoder, Path(cfg.data),
                                         progress=progress and main)
        batches[k] = Batches(buckets, texts, scfg, cfg.sr_crop)

    metrics_path = run_dir / "metrics.jsonl"
    history = []
    if main and metrics_path.is_file():  # keep the log consistent with the checkpoint we resumed from
        history = [r for r in map(json.loads, metrics_path.read_text().splitlines()) if r["step"] <= start]
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    stage_steps = {k: sum(1 for s in plan[:start] if s == k) for k in ids}
    end = min(len(plan), cfg.stop_at) if cfg.stop_at else len(plan)
    last_ckpt_time, window = time.time(), []
    bar = tqdm(total=end, initial=start, desc="train", disable=not (progress and main), dynamic_ncols=True)
    rank = accelerator.process_index
    stop = _StopOnSignal()
    for step in range(start, end):
        k = plan[step]
        t0 = time.time()
        rng = np.random.default_rng([cfg.seed, step, rank])
        torch.manual_seed(int(rng.integers(2 ** 62)))
        x0, text, mask, lowres, tiling = batches[k].sample(rng, cfg.batch_size, accelerator.device)
        with accelerator.autocast():
            loss = losses[k](x0, text, mask, lowres, tiling)
        accelerator.backward(loss)
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(stages[k].parameters(), cfg.grad_clip)
        optimizers[k].step()
        schedulers[k].step()
        optimizers[k].zero_grad(set_to_none=True)
        stage_steps[k] += 1
        n = stage_steps[k]
        _ema_update(ema[k], accelerator.unwrap_model(losses[k]).stage, min(cfg.ema_decay, (1 + n) / (10 + n)))
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step} (stage {k}); lower lr "
                                     f"(now {cfg.lr}) or resume from the last checkpoint")
        window.append((k, loss_value, x0.shape[0] * accelerator.num_processes / (time.time() - t0)))
        done = step + 1
        bar.update(1)
        if main and (done % cfg.log_every_steps == 0 or done == end):
            for kk in ids:
                vals = [v for s, v, _ in window if s == kk]
                if vals:
                    rec = {"step": done, "stage": kk, "loss": float(np.mean(vals)), "time": time.time(),
                           "samples_per_s": float(np.mean([r for s, _, r in window if s == kk]))}
                    history.append(rec)
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
            bar.set_postfix(stage=k, loss=f"{np.mean([v for _, v, _ in window]):.4f}",
                            img_s=f"{np.mean([r for _, _, r in window]):.1f}")
            window = []
        due = (done % cfg.checkpoint_every_steps == 0 or time.time() - last_ckpt_time > 60 * cfg.checkpoint_every_minutes
               or done == end or stop.requested)
        if due:
            accelerator.wait_for_everyone()
            if main:
                ck.save_checkpoint(run_dir, done, {kk: accelerator.unwrap_model(losses[kk]).stage for kk in ids},
                                   ema, optimizers, schedulers, stage_steps, cfg.keep_checkpoints)
                plot_loss(history, run_dir / "loss.png")
            last_ckpt_time = time.time()
        if main and cfg.sample_every_steps and (done % cfg.sample_every_steps == 0 or done == len(plan)):
            sample_grid(ema_imagen, cfg.sample_prompts, run_dir / "samples" / f"step_{done:08d}.png",
                        steps=cfg.sample_steps, seed=cfg.seed)
        if stop.requested:
            accelerator.print(f"stopped by signal at step {done}; checkpoint saved, continue with --resume")
            break
    stop.restore()
    bar.close()
    accelerator.wait_for_everyone()
    if caller_model:  # leave the caller's model holding the EMA weights of what was trained
        for k in ids:
            imagen.stages[k].load_state_dict(ema[k].state_dict())
        imagen.eval()
    return run_dir


def train_imagen(imagen: Imagen, dataset, **overrides) -> Path:
    """`Imagen.train(dataset, **options)`: train this model in place on an image-caption folder."""
    from .config import load_config  # noqa: PLC0415

    overrides.setdefault("run_dir", f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    resume = overrides.pop("resume", False)
    cfg = load_config(None, data=str(dataset), model=_config_dict(imagen), **overrides)
    return train(cfg, resume=resume, imagen=imagen)


def _config_dict(imagen: Imagen) -> dict:
    c = imagen.config
    return {"stages": [s.to_dict() for s in c.stages], "text_encoder": c.text_encoder,
            "max_text_length": c.max_text_length}


def export_run(run_dir: str | Path, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write the latest checkpoint's EMA weights in the `Imagen.from_pretrained` format."""
    from .config import load_config  # noqa: PLC0415

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run (no config.json)")
    cfg = load_config(run_dir / "config.json")
    latest = ck.latest_checkpoint(run_dir)
    if latest is None:
        raise FileNotFoundError(f"{run_dir} has no complete checkpoint yet")
    imagen = Imagen.from_pretrained(cfg.init_from) if cfg.init_from else Imagen(cfg.imagen_config)
    from ..core.checkpoint import load_state_into, load_weights  # noqa: PLC0415

    for k in range(len(imagen.stages)):
        path = latest / f"stage_{k}.ema.safetensors"
        if path.is_file():
            load_state_into(imagen.stages[k], load_weights(path), path)
    imagen.save_pretrained(out_dir, dtype=dtype)
    return Path(out_dir)
