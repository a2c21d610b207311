"""Shared helpers of the benchmarks: timing, statistics, tables, the peer subprocess, machine facts.

Imports only the standard library and torch, so that the peer worker (its own venv, imagen-pytorch 2.1.0) uses it
too. Fairness rules every benchmark follows: the same thread count on both sides (`torch.set_num_threads`), the
same inputs, a warm-up before timing, and repetitions interleaved ours, peer, ours, peer, ... in one run, so that
load from other processes on the machine hits both sides alike. Ratios are what we report; absolute seconds only
say what this machine did at that moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# The peer's interpreter and offline Hugging Face cache: bench/peer_setup.sh makes both here; on a GPU machine
# bench/gpu_device.sh points these variables at its own (the image's python3 with carried wheels).
PEER_PYTHON = Path(os.environ.get("IMAGEN_BENCH_PEER_PYTHON", ROOT / "build" / "peer-venv" / "bin" / "python"))
PEER_HF_HOME = Path(os.environ.get("IMAGEN_BENCH_PEER_HF_HOME", ROOT / "build" / "peer-hf"))
TEXT_DIM = 384          # all-MiniLM-L6-v2, our default encoder; both sides get the same precomputed embeddings
TEXT_LEN = 16


# ---- set-up -------------------------------------------------------------------------------------------------

def setup_torch(threads: int, device: str) -> None:
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def dtype_of(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def autocast(device: str, dtype: str):
    """Mixed precision for bf16 / fp16 (weights stay float32, as in training); a no-op for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype_of(dtype))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def text_inputs(batch: int, length: int = TEXT_LEN, dim: int = TEXT_DIM, device: str = "cpu", seed: int = 0):
    """Precomputed text embeddings (what a frozen encoder would give) and a mask with varied prompt lengths."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, dim, generator=g)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
    mask = torch.arange(length)[None] < lengths[:, None]
    return (tokens * mask[..., None]).to(device), mask.to(device)


def count_flops(fn) -> float:
    """FLOPs of one call of `fn` (matmuls, convolutions and attention, forward and backward), counted by
    `torch.utils.flop_counter` from the shapes: the work both sides must do, whatever their kernels."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def conv_peak(device: str = "cpu", reps: int = 30, dtype: str = "fp32") -> float:
    """Measured FLOP/s of one large 3x3 convolution in `dtype` (autocast, as the networks run), the faster of NCHW
    and channels_last: the reference for how close a U-Net step comes to what this machine's convolution kernels
    can do at all. 16 x 96 x 32 x 32, 96 -> 96 channels on a CPU; on a GPU, where that would time kernel launches,
    64 x 256 x 64 x 64, 256 -> 256 (309 GFLOP per call)."""
    import torch.nn.functional as F  # noqa: PLC0415

    b, c, s = (64, 256, 64) if device == "cuda" else (16, 96, 32)
    w = torch.randn(c, c, 3, 3, device=device)
    best = float("inf")
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(b, c, s, s, device=device).to(memory_format=layout)
        wl = w.to(memory_format=layout)

        def conv():
            with autocast(device, dtype):
                F.conv2d(x, wl, padding=1)

        for _ in range(10):
            conv()
        best = min(best, *(timed(conv, device) for _ in range(reps)))
    return 2 * b * s * s * c * c * 9 / best


# ---- statistics and tables ----------------------------------------------------------------------------------

def stats(times: list[float]) -> dict:
    return {"min": min(times), "median": statistics.median(times), "n": len(times)}


def ratio_row(name: str, ours: list[float], peer: list[float] | None, unit: str = "s") -> list[str]:
    """A table row: ours min/median, peer min/median, and peer/ours (speed-up of ours; > 1 = ours faster)."""
    o = stats(ours)
    row = [name, f"{o['min']:.3f}", f"{o['median']:.3f}"]
    if peer:
        p = stats(peer)
        row += [f"{p['min']:.3f}", f"{p['median']:.3f}", f"{p['min'] / o['min']:.2f}x",
                f"{p['median'] / o['median']:.2f}x"]
    else:
        row += ["-", "-", "-", "-"]
    return row


RATIO_HEADER = ["case", "ours min", "ours median", "peer min", "peer median", "speed-up (min)", "speed-up (median)"]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine_line(threads: int, device: str) -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = f", {torch.cuda.get_device_name()}" if device == "cuda" and torch.cuda.is_available() else ""
    return (f"{cpu} ({os.cpu_count()} logical CPUs), {threads} torch threads{gpu}; torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2))


# ---- the peer (imagen-pytorch in its own venv) -------------------------------------------------------------

class Peer:
    """The peer worker (`bench/_peer_worker.py` under build/peer-venv) as a long-lived subprocess: one JSON
    request per line on its stdin, one JSON reply per line on its stdout. It sits idle (blocked on stdin) while
    our side runs, so the two never compete for the cores."""

    def __init__(self, threads: int, device: str, dtype: str):
        if not shutil.which(str(PEER_PYTHON)):
            raise SystemExit(f"{PEER_PYTHON} is missing: run `bash bench/peer_setup.sh` first (or pass --no-peer)")
        env = dict(os.environ, HF_HOME=str(PEER_HF_HOME), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")])),
                   TQDM_DISABLE="1")
        self.proc = subprocess.Popen(
            [str(PEER_PYTHON), str(ROOT / "bench" / "_peer_worker.py"), "--threads", str(threads),
             "--device", device, "--dtype", dtype],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer worker exited (code {self.proc.wait()}); see its stderr above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"peer worker: {reply['error']}")
        return reply

    def call(self, cmd: str, **kwargs) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("quit")
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=30)
        if self.proc.poll() is None:
            self.proc.kill()


def add_side_by_side_args(ap, reps: int) -> None:
    """The options every ours-vs-peer benchmark takes."""
    ap.add_argument("--reps", type=int, default=reps, help="timed repetitions per side (after one warm-up)")
    ap.add_argument("--text-len", type=int, default=TEXT_LEN)
    ap.add_argument("--width", type=int, default=48, help="our base channels (48: 7.2 M parameters)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--no-peer", action="store_true", help="time our side only")
    ap.add_argument("--json", help="also write the raw timings here")


@contextlib.contextmanager
def peer_session(args):
    """Set up torch for `args`, then yield the peer worker (None with --no-peer); it is closed however we leave."""
    setup_torch(args.threads, args.device)
    peer = None if args.no_peer else Peer(args.threads, args.device, args.dtype)
    try:
        yield peer
    finally:
        if peer:
            peer.close()


def report(bench: str, args, rows: list[list[str]], raw: list[dict], unit: str, **extra) -> dict:
    """Print the ratio table under the machine line, write the JSON if asked, and return the result."""
    machine = machine_line(args.threads, args.device)
    print(f"\n{machine}; {args.device} {args.dtype}; {args.reps} reps per side, interleaved; {unit}; "
          "speed-up = peer time / our time\n")
    print(markdown_table(RATIO_HEADER, rows))
    result = {"bench": bench, "args": vars(args), "machine": machine, **extra, "results": raw}
    write_json(args.json, result)
    return result


def interleave(ours_fn, peer_fn, reps: int) -> tuple[list[float], list[float]]:
    """ours, peer, ours, peer, ... `reps` times each; each fn returns one timing in seconds. peer_fn may be None."""
    ours, peer = [], []
    for _ in range(reps):
        ours.append(ours_fn())
        if peer_fn is not None:
            peer.append(peer_fn())
    return ours, peer


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
