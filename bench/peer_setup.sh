#!/usr/bin/env bash
# Install the benchmark peer, lucidrains' imagen-pytorch 2.1.0, in its own venv (build/peer-venv), offline-safe.
# Idempotent: a second run only checks that the peer imports. Usage: bash bench/peer_setup.sh
#
# Install traps on a CPU-only machine, handled here:
#  1. torch first (the CPU build from local disk), else pip resolves a multi-GB CUDA build;
#  2. imagen-pytorch pulls a torchvision wheel built for CUDA that fails to import beside CPU torch: it is removed
#     and replaced by a stand-in module holding only what imagen-pytorch touches (transforms.Compose/Resize/
#     CenterCrop/ToTensor/..., utils.save_image, used by its data and trainer modules, never by the models);
#  3. importing imagen-pytorch fetches the google/t5-v1_1-base config in a default argument: an offline Hugging
#     Face cache (build/peer-hf) holds a hand-written config for it; HF_HOME points there, HF_HUB_OFFLINE=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/build/peer-venv"
HF="$ROOT/build/peer-hf"
PYTHON="${PYTHON:-python3.11}"
PY="$VENV/bin/python"
export HF_HOME="$HF" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ ! -x "$PY" ]; then
  "$PYTHON" -m venv "$VENV"
fi

if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0
fi
if ! "$PY" -m pip show imagen-pytorch >/dev/null 2>&1; then
  # Pin torch, else pip "upgrades" it to a newer CUDA build to satisfy the newest torchvision.
  printf 'torch==2.13.0\n' > "$ROOT/build/peer-constraints.txt"
  "$PY" -m pip install -q -c "$ROOT/build/peer-constraints.txt" imagen-pytorch==2.1.0
fi

# 2. torchvision stand-in (only if absent or not ours). transformers sees it too (find_spec) and then imports
#    transforms.InterpolationMode / transforms.functional.pil_to_tensor at module level: both are provided.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
TV="$SITE/torchvision"
STANDIN_VERSION=2  # bump when the stand-in below changes
if [ "$(cat "$TV/.bench_standin" 2>/dev/null)" != "$STANDIN_VERSION" ]; then
  "$PY" -m pip uninstall -y -q torchvision >/dev/null 2>&1 || true
  rm -rf "$TV"
  mkdir -p "$TV/transforms/v2"
  echo "$STANDIN_VERSION" > "$TV/.bench_standin"
  cat > "$TV/__init__.py" <<'EOF2'
"""Stand-in for torchvision (benchmark peer venv only): the torchvision wheel pip picks is built against CUDA torch
and fails to register its operators beside CPU torch; imagen-pytorch's networks and samplers never call it.
Only the names imported at module level by imagen-pytorch and transformers exist; calling them raises."""
from . import io, transforms, utils  # noqa: F401

__version__ = "0.0.0+bench.standin"
EOF2
  cat > "$TV/transforms/__init__.py" <<'EOF2'
from enum import Enum

from . import functional  # noqa: F401


class InterpolationMode(Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class _Unavailable:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __call__(self, *args, **kwargs):
        raise RuntimeError("torchvision stand-in: transforms are not available in the benchmark peer venv")


Compose = Resize = CenterCrop = RandomHorizontalFlip = RandomCrop = RandomResizedCrop = _Unavailable
ToTensor = ToPILImage = Lambda = Normalize = _Unavailable
EOF2
  cat > "$TV/transforms/functional.py" <<'EOF2'
def pil_to_tensor(pic):
    import numpy as np
    import torch

    arr = np.asarray(pic)
    arr = arr[..., None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
EOF2
  printf 'from . import functional  # noqa: F401\n' > "$TV/transforms/v2/__init__.py"
  printf 'from .. import InterpolationMode  # noqa: F401\nfrom ..functional import pil_to_tensor  # noqa: F401\n' \
    > "$TV/transforms/v2/functional.py"
  cat > "$TV/io.py" <<'EOF2'
from enum import Enum


class ImageReadMode(Enum):
    UNCHANGED = 0
    GRAY = 1
    GRAY_ALPHA = 2
    RGB = 3
    RGB_ALPHA = 4


def decode_image(*args, **kwargs):
    raise RuntimeError("torchvision stand-in: decode_image is not available in the benchmark peer venv")


read_video = decode_image
EOF2
  cat > "$TV/utils.py" <<'EOF2'
def save_image(*args, **kwargs):
    raise RuntimeError("torchvision stand-in: save_image is not available in the benchmark peer venv")


def make_grid(*args, **kwargs):
    raise RuntimeError("torchvision stand-in: make_grid is not available in the benchmark peer venv")
EOF2
fi

# 3. Offline HF cache entry for google/t5-v1_1-base (config only: the benchmark passes precomputed text embeddings).
bash "$ROOT/bench/peer_hf_cache.sh" "$HF"

"$PY" - <<'EOF'
import torch, imagen_pytorch
from imagen_pytorch import Unet, Imagen, ElucidatedImagen  # noqa: F401
print(f"peer ready: imagen-pytorch {getattr(imagen_pytorch, '__version__', '?')}, torch {torch.__version__}")
EOF
