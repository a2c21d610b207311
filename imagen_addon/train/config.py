"""Training options: one frozen dataclass, read from a JSON file plus `key=value` overrides, written to the run
folder before step 0 (after EDM's `training_options.json`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..core.imagen import ImagenConfig

DEFAULT_PROMPTS = (
    "a landscape with a red ball on the left on green grass under a clear sky",
    "a sunset sky over the ocean with a bright sun",
    "a night sky with stars and a full moon over snow",
    "a yellow tree in the center on sand under an overcast sky",
    "a seamless texture of blue and white diagonal stripes",
    "a seamless texture of red bricks",
    "a seamless texture of black and yellow checkerboard",
    "a seamless texture of wooden planks",
)


COMPILE_BACKENDS = ("", "inductor", "eager", "aot_eager", "cudagraphs")


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""                       # image-caption folder (metadata.jsonl or .txt captions)
    run_dir: str = "runs/default"
    model: dict = field(default_factory=dict)  # an ImagenConfig as a dict (see configs/*.json)
    init_from: str = ""                  # start from a model folder (fine-tuning) instead of random weights
    stages: tuple[int, ...] = ()         # which stages to train; () = all
    steps: tuple[int, ...] = (1000,)     # per trained stage (one value = the same for each)
    schedule: str = "interleaved"        # "interleaved" (round robin, proportional) or "sequential"
    batch_size: int = 32                 # per process
    lr: float = 5e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    sr_crop: int = 0                     # SR stages train on random crops of this size (0 = whole images)
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda (accelerate launch sets the device per process)
    mixed_precision: str = "auto"        # auto = bf16 autocast on GPU, fp32 on CPU | no | bf16 | fp16 (GPU);
                                         # bf16 on a CPU with native bf16: faster, loss a little behind (trainer.py)
    threads: int = 0                     # torch CPU threads (0 = torch's default)
    compile: str = ""                    # torch.compile backend of the training step ("" = off; "inductor" for
                                         # long GPU runs; "eager" / "aot_eager" to debug): minutes of compiling first
    checkpoint_every_steps: int = 500
    checkpoint_every_minutes: float = 10.0
    keep_checkpoints: int = 3
    sample_every_steps: int = 500
    sample_prompts: tuple[str, ...] = DEFAULT_PROMPTS
    sample_steps: int = 20
    log_every_steps: int = 10
    stop_at: int = 0                     # stop (with a checkpoint) at this global step; 0 = run to the end

    def __post_init__(self):
        for name in ("stages", "steps", "sample_prompts"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.model:
            raise ValueError("config needs `model` (an ImagenConfig dict); see configs/bundled.json")
        n = len(self.imagen_config.stages)
        bad = [s for s in self.stages if not 0 <= s < n]
        if bad:
            raise ValueError(f"stages {bad} do not exist; the model has stages 0..{n - 1}")
        if len(self.steps) not in (1, len(self.stage_ids)) or any(s < 0 for s in self.steps):
            raise ValueError(f"steps needs one value or one per trained stage ({len(self.stage_ids)}), all >= 0")
        if self.schedule not in ("interleaved", "sequential"):
            raise ValueError("schedule must be 'interleaved' or 'sequential'")
        if self.compile not in COMPILE_BACKENDS:
            raise ValueError(f"compile must be one of {COMPILE_BACKENDS} ('' = off), got {self.compile!r}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError("mixed_precision must be auto, no, bf16 or fp16")
        if self.batch_size < 1 or self.lr <= 0 or not 0 <= self.ema_decay < 1 or self.keep_checkpoints < 1:
            raise ValueError("need batch_size >= 1, lr > 0, 0 <= ema_decay < 1, keep_checkpoints >= 1")
        for s in self.stage_ids:
            stage = self.imagen_config.stages[s]
            if stage.is_sr and self.sr_crop and (self.sr_crop % stage.scale or self.sr_crop > stage.image_size):
                raise ValueError(f"sr_crop {self.sr_crop} must be a multiple of stage {s}'s scale {stage.scale} "
                                 f"and at most its size {stage.image_size}")

    @property
    def imagen_config(self) -> ImagenConfig:
        return ImagenConfig(**self.model)

    @property
    def stage_ids(self) -> tuple[int, ...]:
        return self.stages or tuple(range(len(self.model["stages"])))

    @property
    def stage_steps(self) -> dict[int, int]:
        steps = self.steps * len(self.stage_ids) if len(self.steps) == 1 else self.steps
        return dict(zip(self.stage_ids, steps))

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        from ..core.checkpoint import atomic_write_json  # noqa: PLC0415

        atomic_write_json(path, self.to_dict())


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_config(path: str | Path | None = None, overrides: list[str] = (), **kwargs) -> TrainConfig:
    """A TrainConfig from a JSON file, then `key=value` overrides (dotted keys reach into `model`, values parsed
    as JSON when possible: steps=[2000,1000] lr=3e-4 model.text_encoder=minilm), then keyword arguments."""
    raw: dict = {}
    if path:
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError as e:
            raise ValueError(f"config file {path} does not exist") from e
        except ValueError as e:
            raise ValueError(f"config file {path} is not valid JSON: {e}") from e
    known = {f.name for f in fields(TrainConfig)}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        parts = key.split(".")
        if parts[0] not in known:
            raise ValueError(f"unknown option {parts[0]!r}; options: {', '.join(sorted(known))}")
        target = raw
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        target[parts[-1]] = _parse_value(value)
    raw.update(kwargs)
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; options: {', '.join(sorted(known))}")
    return TrainConfig(**raw)
