#!/usr/bin/env bash
# Run THERE, on the GPU machine (device tool), as the one prepared check of a session; BENCHMARKS.md section 5 has
# the call. Installs the carried peer wheels (.whl, from bench/gpu_wheels.sh), then runs the side-by-side
# benchmarks in bf16 at 64 and 256 px. Results (JSON + the printed tables) go to $OUT, else build/bench/gpu.
# Budget: about 5 minutes on an H200, well inside one 10-minute command.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-build/bench/gpu}"
mkdir -p "$RESULTS"
PY="${BENCH_PYTHON:-python3}"
WHEELS="${BENCH_WHEELS-.whl}"   # a local dry run on a CPU: BENCH_WHEELS= BENCH_DEVICE=cpu BENCH_DTYPE=fp32 ...
DEVICE="${BENCH_DEVICE:-cuda}" DTYPE="${BENCH_DTYPE:-bf16}" REPS="${BENCH_REPS:-10}" THREADS="${BENCH_THREADS:-16}"
LOG="$RESULTS/gpu_log.txt"
export PYTHONUNBUFFERED=1
{
  echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi")"
  if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
      || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export IMAGEN_BENCH_PEER_PYTHON="${IMAGEN_BENCH_PEER_PYTHON:-$PY}"
  export IMAGEN_BENCH_PEER_HF_HOME="${IMAGEN_BENCH_PEER_HF_HOME:-/tmp/peer-hf}"
  bash bench/peer_hf_cache.sh "$IMAGEN_BENCH_PEER_HF_HOME"
  NOPEER=
  HF_HOME="$IMAGEN_BENCH_PEER_HF_HOME" HF_HUB_OFFLINE=1 "$IMAGEN_BENCH_PEER_PYTHON" -c \
    "import torch, imagen_pytorch; print('peer imports; torch', torch.__version__)" \
    || { echo "the peer does not import: the runs below time ours only"; NOPEER=--no-peer; }
  SIZES=${GPU_SIZES:-64 256}
  set -x
  timeout 300 "$PY" bench/unet_step.py --device "$DEVICE" --dtype "$DTYPE" --threads "$THREADS" --sizes $SIZES --batches 16 32 \
    --reps "$REPS" $NOPEER --json "$RESULTS/unet_step_gpu.json" > "$RESULTS/unet_step_gpu.md"
  timeout 180 "$PY" bench/guided_sampling.py --device "$DEVICE" --dtype "$DTYPE" --threads "$THREADS" --sizes $SIZES --steps 50 \
    --reps $(( (REPS + 1) / 2 )) $NOPEER --json "$RESULTS/guided_gpu.json" > "$RESULTS/guided_gpu.md"
  set +x
  echo "== done $(date -u +%FT%TZ)"
} 2>&1 | tee "$LOG"
