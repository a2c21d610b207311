"""What a person looks at during a run: a sample grid for fixed prompts and the loss curve per stage."""

from __future__ import annotations

import io
from pathlib import Path

from ..core.checkpoint import atomic_write_bytes


def sample_grid(imagen, prompts, path: Path, steps: int = 20, seed: int = 0, columns: int = 4) -> None:
    from PIL import Image  # noqa: PLC0415

    was_training = imagen.training
    imagen.eval()
    tilings = ["xy" if "seamless" in p else "none" for p in prompts]
    images = []
    for p, tiling in zip(prompts, tilings):
        images += imagen.generate(p, seed=seed, steps=steps, tiling=tiling)
    imagen.train(was_training)
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w, rows * h))
    for i, im in enumerate(images):
        grid.paste(im.resize((w, h)), ((i % columns) * w, (i // columns) * h))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for stage in sorted({r["stage"] for r in history}):
        rows = [r for r in history if r["stage"] == stage]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=f"stage {stage}")
    ax.set_xlabel("global step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
