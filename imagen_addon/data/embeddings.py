"""Text embeddings of a dataset, computed once with the frozen encoder and cached on disk.

The encoder never changes during training (Imagen Sec. 2.1), so training never runs it in its loop: every unique
caption is encoded once into `DATA/.imagen_cache/text-<encoder>-<hash>.safetensors` and looked up by index.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..core.checkpoint import load_weights, save_weights
from .folder import CACHE_DIR


class TextEmbeddingCache:
    """Token embeddings [U, L, D] (fp16) and lengths [U] of U unique captions, plus caption -> row."""

    def __init__(self, captions: list[str], tokens: torch.Tensor, lengths: torch.Tensor):
        self.row = {c: i for i, c in enumerate(captions)}
        self.tokens, self.lengths = tokens, lengths

    def lookup(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, L, D] float32, mask [B, L]) for captions of the dataset, trimmed to the longest in the batch."""
        rows = torch.tensor([self.row[c] for c in captions])
        lengths = self.lengths[rows]
        length = max(1, int(lengths.max()))
        tokens = self.tokens[rows, :length].float()
        mask = torch.arange(length)[None] < lengths[:, None]
        return tokens, mask

    @classmethod
    def build(cls, captions: list[str], encoder, cache_dir: Path | None = None, batch: int = 256,
              progress: bool = True) -> "TextEmbeddingCache":
        from tqdm import tqdm  # noqa: PLC0415

        unique = sorted(set(captions))
        ident = encoder.identity
        key = hashlib.sha256(json.dumps([ident, unique]).encode()).hexdigest()[:16]
        path = None if cache_dir is None else Path(cache_dir) / CACHE_DIR / f"text-{ident['name'].replace(':', '_').replace('/', '_')}-{key}.safetensors"
        if path is not None and path.is_file():
            state = load_weights(path)
            return cls(unique, state["tokens"], state["lengths"])
        per_caption = []
        for start in tqdm(range(0, len(unique), batch), desc="encoding captions", disable=not progress):
            chunk = unique[start:start + batch]
            per_caption += encoder._encode_uncached(chunk)
        length = max(t.shape[0] for t in per_caption)
        tokens = torch.zeros(len(unique), length, ident["dim"], dtype=torch.float16)
        lengths = torch.tensor([t.shape[0] for t in per_caption])
        for i, t in enumerate(per_caption):
            tokens[i, :t.shape[0]] = t.half()
        if path is not None:
            try:
                save_weights({"tokens": tokens, "lengths": lengths}, path)
            except OSError:
                pass  # read-only dataset: recompute next time
        return cls(unique, tokens, lengths)
