#!/usr/bin/env bash
# Run HERE, before a session's one GPU run: downloads the wheels the benchmark peer (imagen-pytorch 2.1.0) needs and
# the GPU machine's image lacks, for its Python 3.12, into .whl/ (ignored by git; the device tool carries it).
# Everything else both sides use (torch with CUDA, transformers, accelerate, safetensors, einops, numpy, pandas,
# pyarrow, tqdm, pillow) is in that image. Then see BENCHMARKS.md section 5 for the one `run` call.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
# imagen-pytorch's own requirements missing there, then theirs (versions as in the CPU peer venv, session 6).
WHEELS=(imagen-pytorch==2.1.0 beartype==0.23.1 ema-pytorch==0.8.3 kornia==0.9.0 kornia-rs==0.2.0
        pytorch-warmup==0.2.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pydantic==2.14.4
        pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls .whl | wc -l | xargs echo "wheels in .whl:"
du -sh .whl
