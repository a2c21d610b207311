"""The peer side of the benchmarks: lucidrains' imagen-pytorch 2.1.0, run by build/peer-venv/bin/python.

Started by `bench/_common.Peer`; reads one JSON request per line on stdin and answers one JSON line on stdout
(imagen-pytorch prints advice with print(), so everything else is sent to stderr). Requests:

  {"cmd": "build", "size": S, "target_params": N, "levels": 3, "res_blocks": [1, 2, 3], "heads": 4,
   "head_dim": 48, "text_len": L, "timesteps": T}      -> {"params": n, "dim": d}
  {"cmd": "train", "batch": B, "iters": k}              -> {"times": [...]}  (s per step: loss, backward, AdamW)
  {"cmd": "forward", "batch": B, "iters": k}            -> {"times": [...]}  (s per U-Net forward, no grad)
  {"cmd": "sample", "cond_scale": w, "batch": 1}        -> {"times": [t]}    (s per sample() call, T steps)
  {"cmd": "quit"}
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

import torch

from _common import autocast, count_flops, setup_torch, text_inputs, timed

REPLY = sys.stdout
sys.stdout = sys.stderr  # imagen-pytorch's print_once advice must not reach the reply channel


class Worker:
    def __init__(self, device: str, dtype: str):
        self.device, self.dtype = device, dtype
        self.unet = self.imagen = self.opt = None
        self.spec: dict = {}

    def unet_kwargs(self, spec: dict, dim: int) -> dict:
        """The peer U-Net mirroring ours: same levels and resolutions (attention-free top level, masked cross
        attention at the two lower levels, self attention at the lowest level on the way down and up, no extra
        bottleneck attention), same text length, heads of the same width. imagen-pytorch puts one extra
        (cross-attention) ResNet block at the start of every level, so it gets one fewer plain block per level."""
        levels = spec["levels"]
        return dict(
            dim=dim, text_embed_dim=spec.get("text_dim", 384), channels=3,
            dim_mults=tuple(2 ** i for i in range(levels)),
            num_resnet_blocks=tuple(max(0, n - 1) for n in spec["res_blocks"]),
            layer_attns=tuple(i == levels - 1 for i in range(levels)),
            layer_cross_attns=tuple(i >= levels - 2 for i in range(levels)),
            attend_at_middle=False, attn_heads=spec["heads"], attn_dim_head=spec["head_dim"],
            max_text_len=spec["text_len"], memory_efficient=False)

    def build(self, spec: dict) -> dict:
        from imagen_pytorch import Imagen, Unet

        def count(dim):
            return sum(p.numel() for p in Unet(**self.unet_kwargs(spec, dim)).parameters())

        best = spec.get("dim")
        if best is None:  # the base width (multiple of 8, GroupNorm) whose parameter count is closest to ours
            target, best, best_err = spec["target_params"], 0, float("inf")
            for dim in range(16, 513, 8):
                err = count(dim) - target
                if abs(err) < best_err:
                    best, best_err = dim, abs(err)
                if err > 0:
                    break
        unet = Unet(**self.unet_kwargs(spec, best))
        self.imagen = Imagen(unets=(unet,), image_sizes=(spec["size"],), text_embed_dim=spec.get("text_dim", 384),
                             timesteps=spec.get("timesteps", 1000), pred_objectives="v", cond_drop_prob=0.1,
                             dynamic_thresholding=True).to(self.device)
        self.unet = self.imagen.get_unet(1)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=1e-4)
        self.spec = spec
        return {"params": sum(p.numel() for p in self.unet.parameters()), "dim": best}

    def _inputs(self, batch: int):
        s = self.spec["size"]
        g = torch.Generator().manual_seed(1)
        x = torch.rand(batch, 3, s, s, generator=g).to(self.device)
        text, mask = text_inputs(batch, self.spec["text_len"], self.spec.get("text_dim", 384), self.device)
        return x, text, mask

    def train(self, batch: int, iters: int) -> dict:
        images, text, mask = self._inputs(batch)
        self.unet.train()

        def step():
            with autocast(self.device, self.dtype):
                loss = self.imagen(images, text_embeds=text, text_masks=mask, unet_number=1)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

        return {"times": [timed(step, self.device) for _ in range(iters)]}

    def flops(self, mode: str, batch: int) -> dict:
        """FLOPs of one training step's loss + backward (mode "train") or of one forward (mode "forward")."""
        images, text, mask = self._inputs(batch)
        if mode == "train":
            def run():
                self.imagen(images, text_embeds=text, text_masks=mask, unet_number=1).backward()
            flops = count_flops(run)
            self.opt.zero_grad(set_to_none=True)
        else:
            times = torch.full((batch,), 0.5, device=self.device)
            with torch.inference_mode():
                flops = count_flops(lambda: self.unet(images * 2 - 1, times, text_embeds=text, text_mask=mask))
        return {"flops": flops}

    def forward(self, batch: int, iters: int) -> dict:
        x, text, mask = self._inputs(batch)
        x = x * 2 - 1
        times = torch.full((batch,), 0.5, device=self.device)
        self.unet.eval()

        def fwd():
            with torch.inference_mode(), autocast(self.device, self.dtype):
                self.unet(x, times, text_embeds=text, text_mask=mask)

        return {"times": [timed(fwd, self.device) for _ in range(iters)]}

    def sample(self, cond_scale: float, batch: int = 1) -> dict:
        _, text, mask = self._inputs(batch)

        def run():
            with autocast(self.device, self.dtype):
                self.imagen.sample(text_embeds=text, text_masks=mask, cond_scale=cond_scale, batch_size=batch,
                                   use_tqdm=False, device=self.device)

        return {"times": [timed(run, self.device)]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    args = ap.parse_args()
    setup_torch(args.threads, args.device)
    import imagen_pytorch

    worker = Worker(args.device, args.dtype)
    REPLY.write(json.dumps({"ready": True, "imagen_pytorch": imagen_pytorch.__version__,
                            "torch": torch.__version__}) + "\n")
    REPLY.flush()
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req.pop("cmd")
        try:
            if cmd == "quit":
                reply = {"bye": True}
            elif cmd == "build":
                reply = worker.build(req)
            else:
                reply = getattr(worker, cmd)(**req)
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
            traceback.print_exc()
            reply = {"error": f"{type(e).__name__}: {e}"}
        REPLY.write(json.dumps(reply) + "\n")
        REPLY.flush()
        if cmd == "quit":
            break


if __name__ == "__main__":
    main()
