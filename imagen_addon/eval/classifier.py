"""Two small CNNs trained on procedural images, and the Fréchet distance in the larger one's feature space.

* the world net reads a whole image at 64 px: material pattern and stripe orientation (what the judge uses), plus
  landscape sky and ground and the image kind as auxiliary heads so that its 64-d penultimate features describe
  both kinds of image (the Fréchet distance's feature space);
* the shape net reads a 32 px crop around the object that `judge.find_object` located: ball, cube or tree.

Both train in a few minutes on one CPU thread (`train_nets`) from images rendered on the fly, with blur, noise,
colour and geometric augmentation so that soft, noisy generated images read like clean ones. Only attribute combinations
that the bundled model trained on are used (`heldout.is_held_out` ones are left out), so the judge's accuracy on
held-out combinations is a fair test. The weights (< 1 MB) are kept next to this file; when they are missing or
their recipe changed, `load_nets` retrains them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.heldout import is_held_out
from ..data.vocab import GROUNDS, ORIENTATIONS, PATTERNS, SHAPES, SKIES, sample_attributes
from ..data.worlds import render

WORLD_HEADS = {"kind": ("landscape", "material"), "pattern": PATTERNS, "orientation": ORIENTATIONS,
               "sky": SKIES, "ground": GROUNDS}
SHAPE_HEADS = {"shape": SHAPES}
RECIPE = {"version": 2, "world_images": 6000, "shape_images": 3000, "epochs": 8, "seed": 1234, "batch": 32,
          "lr": 2e-3}
WEIGHTS = Path(__file__).with_name("judge_nets.safetensors")
CROP = 32


class ConvNet(nn.Module):
    """conv-BN-ReLU blocks, each followed by 2x max pooling, global average pooling, a feature layer and one
    linear head per attribute."""

    def __init__(self, widths: tuple[int, ...], feature_dim: int, heads: dict[str, tuple[str, ...]]):
        super().__init__()
        layers, c_in = [], 3
        for c in widths:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.feature = nn.Linear(c_in, feature_dim)
        self.heads = nn.ModuleDict({k: nn.Linear(feature_dim, len(v)) for k, v in heads.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.feature(self.body(x).mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: head(f) for k, head in self.heads.items()}


def world_net() -> ConvNet:
    return ConvNet((16, 32, 64, 64, 96), 64, WORLD_HEADS)


def shape_net() -> ConvNet:
    return ConvNet((16, 32, 48), 48, SHAPE_HEADS)


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """float 0..255 arrays [H, W, 3] (one size) -> [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.stack(images).astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0


def object_crop(img: np.ndarray, core: np.ndarray) -> np.ndarray:
    """A CROP x CROP view [float 0..255] of the judging image around an object's eroded core: a square 1.3x the
    larger side of the core's box grown back by the erosion's pixel."""
    from PIL import Image  # noqa: PLC0415

    ys, xs = np.nonzero(core)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    half = np.clip(0.65 * (max(ys.max() - ys.min(), xs.max() - xs.min()) + 3), 5, 24)
    pad = 26
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge").astype(np.uint8)
    box = (cx - half + pad, cy - half + pad, cx + half + pad, cy + half + pad)
    return np.asarray(Image.fromarray(padded).resize((CROP, CROP), Image.BILINEAR, box=box), np.float32)


# ---------------------------------------------------------------- Fréchet distance


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a [N, D] and b [M, D]:
    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2), with eigh-based square roots."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least two samples per set")
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = _sqrt_psd(sa)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ sb @ root), 0, None)).sum()
    fd = float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * cross)
    return max(fd, 0.0)


# ---------------------------------------------------------------- training data and augmentation


def _labels(attrs: dict) -> dict[str, int]:
    out = {k: -100 for k in WORLD_HEADS}
    out["kind"] = 0 if attrs["kind"] == "landscape" else 1
    if attrs["kind"] == "material":
        out["pattern"] = PATTERNS.index(attrs["pattern"])
        if "orientation" in attrs:
            out["orientation"] = ORIENTATIONS.index(attrs["orientation"])
    else:
        out["sky"], out["ground"] = SKIES.index(attrs["sky"]), GROUNDS.index(attrs["ground"])
    return out


def world_examples(count: int, seed: int, exclude=is_held_out) -> tuple[list[np.ndarray], list[dict], list[dict]]:
    """`count` judging-scale images (a third landscapes, two thirds materials: patterns are the harder part),
    their labels and attribute records."""
    from .judge import to_array  # noqa: PLC0415

    images, labels, records = [], [], []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        attrs = sample_attributes(rng, "landscape" if i % 3 == 0 else "material", exclude)
        images.append(to_array(render(attrs, 128, rng)))
        labels.append(_labels(attrs))
        records.append(attrs)
    return images, labels, records


def shape_examples(count: int, seed: int, exclude=is_held_out) -> tuple[list[np.ndarray], list[int]]:
    """Object crops, located the way the judge locates them, from `count` landscapes with a visible object."""
    from .judge import locate_object, object_visible, to_array  # noqa: PLC0415

    crops, labels = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        attrs = sample_attributes(rng, "landscape", lambda a: not a["object"] or not object_visible(a)
                                  or (exclude is not None and exclude(a)))
        img = to_array(render(attrs, 128, rng))
        found = locate_object(img)
        if found is not None:
            crops.append(object_crop(img, found[0]))
            labels.append(SHAPES.index(attrs["object"]["shape"]))
    return crops, labels


def augment(x: torch.Tensor, material: torch.Tensor, orientation: torch.Tensor, g: torch.Generator):
    """Generated-image look-alikes: random blur or 2x resampling, noise, brightness and colour casts, horizontal
    flips. Materials also get circular shifts, transposes (horizontal <-> vertical stripes) and shuffled colour
    channels, so that the pattern is read apart from the (possibly never seen) colours; crops get shuffled
    channels too."""
    b, _, h, w = x.shape
    u = torch.rand(b, 6, generator=g)
    soft = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    lo = F.interpolate(F.avg_pool2d(x, 2), size=(h, w), mode="bilinear", align_corners=False)
    pick = u[:, 0].view(b, 1, 1, 1)
    x = torch.where(pick < 0.3, x, torch.where(pick < 0.55, soft, lo))
    x = x * (0.88 + 0.24 * u[:, 1]).view(b, 1, 1, 1) + 0.08 * (torch.rand(b, 3, 1, 1, generator=g) - 0.5)
    x = x + 0.08 * u[:, 2].view(b, 1, 1, 1) * torch.randn(x.shape, generator=g)
    flip = u[:, 3] < 0.5
    x[flip] = x[flip].flip(-1)
    shuffle = torch.ones(b, dtype=torch.bool) if material is None else material
    for i in torch.nonzero(shuffle & (u[:, 5] < 0.6)).flatten().tolist():
        x[i] = x[i][torch.randperm(3, generator=g)]
    if material is not None:
        for i in torch.nonzero(material).flatten().tolist():
            dy, dx = (int(v) for v in torch.randint(0, h, (2,), generator=g))
            x[i] = x[i].roll((dy, dx), dims=(1, 2))
            if u[i, 4] < 0.5 and h == w:
                x[i] = x[i].transpose(1, 2).clone()
                if orientation[i] in (0, 1):
                    orientation[i] = 1 - orientation[i]
    return x.clamp(-1.2, 1.2), orientation


def _fit(net: ConvNet, x: torch.Tensor, y: dict[str, torch.Tensor], epochs: int, seed: int, is_world: bool):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=RECIPE["lr"], weight_decay=1e-4)
    steps = epochs * ((len(x) + RECIPE["batch"] - 1) // RECIPE["batch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, RECIPE["lr"], total_steps=steps, pct_start=0.15)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for idx in order.split(RECIPE["batch"]):
            xb, yb = x[idx], {k: v[idx].clone() for k, v in y.items()}
            material = yb["kind"] == 1 if is_world else None
            xb, orient = augment(xb.clone(), material, yb.get("orientation"), g)
            if is_world:
                yb["orientation"] = orient
            out = net(xb)
            loss = sum(F.cross_entropy(out[k], yb[k], ignore_index=-100) for k in out if (yb[k] >= 0).any())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@dataclass
class Nets:
    world: ConvNet
    shape: ConvNet
    meta: dict

    @torch.inference_mode()
    def world_outputs(self, images: list[np.ndarray]) -> tuple[dict[str, list[str]], np.ndarray]:
        """Predicted labels per head and the 64-d features of judging-scale images (64 px high). The pattern
        is averaged over flipped, transposed and shifted views (a pattern is invariant to all of them)."""
        labels, feats = {k: [] for k in WORLD_HEADS}, []
        for start in range(0, len(images), 128):
            x = to_tensor(images[start:start + 128])
            f = self.world.features(x)
            feats.append(f.numpy())
            for k, head in self.world.heads.items():
                logits = head(f)
                if k == "pattern" and x.shape[2] == x.shape[3]:
                    views = (x.flip(-1), x.flip(-2), x.transpose(2, 3), x.roll((16, 16), (2, 3)),
                             x.transpose(2, 3).roll((8, 24), (2, 3)))
                    logits = sum((self.world(v)[k].softmax(-1) for v in views), logits.softmax(-1))
                labels[k] += [WORLD_HEADS[k][i] for i in logits.argmax(-1).tolist()]
        return labels, np.concatenate(feats) if feats else np.zeros((0, 64), np.float32)

    @torch.inference_mode()
    def shapes(self, crops: list[np.ndarray]) -> list[str]:
        if not crops:
            return []
        return [SHAPES[i] for i in self.shape(to_tensor(crops))["shape"].argmax(-1).tolist()]


def train_nets(progress: bool = True) -> Nets:
    """Render the training images, fit both nets (one thread is enough) and measure them on held-out ones."""
    torch.manual_seed(RECIPE["seed"])
    t0 = time.time()
    say = print if progress else (lambda *a, **k: None)
    say("judge: rendering training images ...")
    images, labels, _ = world_examples(RECIPE["world_images"], RECIPE["seed"])
    crops, shapes = shape_examples(RECIPE["shape_images"], RECIPE["seed"] + 1)
    y = {k: torch.tensor([lab[k] for lab in labels]) for k in WORLD_HEADS}
    say(f"judge: training the world net on {len(images)} images ...")
    world = _fit(world_net(), to_tensor(images), y, RECIPE["epochs"], RECIPE["seed"], True)
    say(f"judge: training the shape net on {len(crops)} crops ...")
    shape = _fit(shape_net(), to_tensor(crops), {"shape": torch.tensor(shapes)}, 2 * RECIPE["epochs"],
                 RECIPE["seed"] + 1, False)
    nets = Nets(world, shape, {"recipe": RECIPE, "train_seconds": round(time.time() - t0, 1)})
    nets.meta["heldout_accuracy"] = validate(nets)
    say(f"judge: trained in {time.time() - t0:.0f} s; held-out accuracy {nets.meta['heldout_accuracy']}")
    return nets


def validate(nets: Nets, count: int = 400, seed: int = 999) -> dict[str, float]:
    """Head accuracies on clean procedural images of held-out combinations only."""
    images, labels, _ = world_examples(count, seed, exclude=lambda a: not is_held_out(a))
    pred, _ = nets.world_outputs(images)
    acc = {}
    for k, names in WORLD_HEADS.items():
        pairs = [(p, names[lab[k]]) for p, lab in zip(pred[k], labels) if lab[k] >= 0]
        acc[k] = round(float(np.mean([p == t for p, t in pairs])), 4)
    crops, shapes = shape_examples(count // 2, seed + 1, exclude=lambda a: not is_held_out(a))
    acc["shape"] = round(float(np.mean([p == SHAPES[t] for p, t in zip(nets.shapes(crops), shapes)])), 4)
    return acc


def save_nets(nets: Nets, path: Path = WEIGHTS) -> None:
    from safetensors.torch import save_file  # noqa: PLC0415

    tensors = {f"world.{k}": v.half() if v.is_floating_point() else v for k, v in nets.world.state_dict().items()}
    tensors |= {f"shape.{k}": v.half() if v.is_floating_point() else v for k, v in nets.shape.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"meta": json.dumps(nets.meta)})
    tmp.replace(path)


def _read(path: Path) -> Nets | None:
    from safetensors import safe_open  # noqa: PLC0415

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("meta", "{}"))
        if meta.get("recipe") != RECIPE:
            return None
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    nets = Nets(world_net(), shape_net(), meta)
    for name, net in (("world", nets.world), ("shape", nets.shape)):
        state = {k[len(name) + 1:]: v.float() if v.is_floating_point() else v
                 for k, v in tensors.items() if k.startswith(name + ".")}
        net.load_state_dict(state)
        net.eval()
    return nets


@lru_cache(maxsize=4)
def load_nets(path: Path = WEIGHTS, progress: bool = True) -> Nets:
    """The judge's nets from `path`, trained (a few minutes) and saved there first if missing or stale."""
    nets = _read(path) if path.is_file() else None
    if nets is None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            nets = train_nets(progress)
        finally:
            torch.set_num_threads(threads)
        save_nets(nets, path)
    return nets
