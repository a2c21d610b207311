#!/usr/bin/env bash
# Every CPU benchmark of BENCHMARKS.md in one go, for a quiet machine (nothing else running): the peer set-up,
# then sections 1-4. Raw timings go to build/bench/quiet/*.json, the printed tables to build/bench/quiet/*.md.
#   bash bench/quiet_rerun.sh            # about 25 min on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/bench/quiet
PY=.venv/bin/python
mkdir -p "$OUT"
bash bench/peer_setup.sh
run() {  # name, then the script and its arguments
  local name=$1; shift
  echo "== $name: $*  ($(date +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$PY" "$@" --json "$OUT/$name.json" | tee "$OUT/$name.md"
}
run unet32 bench/unet_step.py --sizes 32 --batches 16 32 --reps 5
run unet64 bench/unet_step.py --sizes 64 --batches 16 32 --reps 3
run levers32 bench/train_levers.py --size 32 --batch 16 --reps 6
run levers64 bench/train_levers.py --size 64 --batch 16 --reps 4
run guided bench/guided_sampling.py --sizes 32 --steps 50 --reps 3
run end_to_end bench/end_to_end.py --threads 2 --cases default dpmpp:10 ddim:50 ancestral:250 --reps 3
run end_to_end_1t bench/end_to_end.py --threads 1 --cases default --reps 3 --no-rss
run fast_paths bench/fast_paths.py --reps 10
run compile bench/fast_paths.py --only compile --reps 5
echo "== done $(date +%H:%M:%S)"
