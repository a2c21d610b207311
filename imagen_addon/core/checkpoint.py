"""The on-disk format of a cascade (after diffusers: one folder per component, config JSON + safetensors).

    MODEL_DIR/
      imagen.json                 {"format": "imagen-for-blender", "format_version": 1, "text_encoder": {...},
                                   "max_text_length": 64, "stages": ["stage_0", "stage_1"]}
      stage_0/config.json         StageConfig (U-Net + diffusion), human readable
      stage_0/model.safetensors   EMA weights

No pickle anywhere: weights are safetensors, configs JSON. Every file is written atomically (temp + rename), and
loading checks every tensor name and shape, naming the mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

FORMAT = "imagen-for-blender"
FORMAT_VERSION = 1
INDEX = "imagen.json"
WEIGHTS = "model.safetensors"


class CheckpointError(RuntimeError):
    """A model folder cannot be loaded; the message names the file and what is wrong."""


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`: readers see old or new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_weights(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None = None,
                 metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save  # noqa: PLC0415

    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in state.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a truncated, corrupt or non-safetensors (e.g. pickle) file is a CheckpointError."""
    from safetensors.torch import load  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    data = path.read_bytes()
    if len(data) < 8 or int.from_bytes(data[:8], "little") > len(data) - 8:
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({len(data)} bytes); "
                              "re-export or re-download the model")
    try:
        return load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad headers
        raise CheckpointError(f"{path} is not a valid safetensors file ({e}); re-export the model") from e


def load_state_into(module: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Copy `state` into `module`, refusing missing, unexpected or mis-shaped tensors with their names."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        lines = [f"{where} does not match its config.json:"]
        lines += [f"  missing {k}" for k in missing[:5]] + [f"  unexpected {k}" for k in unexpected[:5]]
        lines += [f"  shape {w}" for w in wrong[:5]]
        raise CheckpointError("\n".join(lines))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def read_index(model_dir: Path) -> dict:
    model_dir = Path(model_dir)
    path = model_dir / INDEX
    if not path.is_file():
        raise CheckpointError(f"{model_dir} is not an Imagen model folder: {INDEX} is missing")
    try:
        index = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if index.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {index.get('format')!r} is not {FORMAT!r}")
    if index.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {index['format_version']}; this version of Imagen for "
                              f"Blender reads up to {FORMAT_VERSION}: update the extension")
    return index


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path} is missing") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e


def folder_hash(model_dir: Path) -> str:
    """A short content hash of a model folder (index + every stage's weights), recorded with each result."""
    digest = hashlib.sha256()
    model_dir = Path(model_dir)
    for path in [model_dir / INDEX, *sorted(model_dir.glob(f"*/{WEIGHTS}"))]:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def check_encoder(recorded: dict, actual: dict, where: Path) -> None:
    """Refuse a model paired with another text encoder than the one it was trained with."""
    if recorded.get("name") != actual["name"] or recorded.get("hash") != actual["hash"]:
        raise CheckpointError(
            f"{where} was trained with text encoder {recorded.get('name')!r} (weights {recorded.get('hash')}), "
            f"but {actual['name']!r} (weights {actual['hash']}) was given: a diffusion model only understands the "
            "embeddings of its own frozen encoder. Load it with its own encoder.")
    if recorded.get("dim") not in (None, actual["dim"]):
        raise CheckpointError(f"{where}: text width {recorded.get('dim')} != encoder width {actual['dim']}")
