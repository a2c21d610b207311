"""The `imagen` command line: generate, train, export, data, eval, serve, info.

Every command validates its input and reports problems as one `error: ...` line (exit status 2), never a
traceback; heavy libraries are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class UsageError(Exception):
    pass


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 128x128, got {text!r}") from None
    return w, h


def encode_png(image, text: dict[str, str]) -> bytes:
    """PNG bytes with `text` in tEXt/iTXt chunks (prompt, seed, settings, model hash)."""
    import io  # noqa: PLC0415

    from PIL.PngImagePlugin import PngInfo  # noqa: PLC0415

    info = PngInfo()
    for k, v in text.items():
        info.add_itxt(k, str(v))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def cmd_generate(args) -> int:
    from PIL import Image  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from .core.checkpoint import atomic_write_bytes  # noqa: PLC0415
    from .core.imagen import Imagen  # noqa: PLC0415

    init = None
    if args.init:
        try:
            init = Image.open(args.init).convert("RGB")
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read init image {args.init}: {e}") from e
    imagen = Imagen.from_pretrained(args.model, device=args.device)
    size = args.size
    tiling = args.tiling
    if args.panorama:
        h = size[1] if size else imagen.config.stages[-1].image_size
        size, tiling = (2 * h, h), "x"
    bar = tqdm(desc="generating", unit="step", leave=False)

    def on_step(p):
        bar.set_description(f"stage {p.stage + 1}/{p.stage_count}")
        bar.update(1)

    guidance = args.guidance if len(args.guidance) > 1 else args.guidance[0]
    images = imagen.generate(args.prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
                             sampler=args.sampler, guidance_scale=guidance, size=size, tiling=tiling,
                             init_image=init, strength=args.strength, count=args.count, callback=on_step)
    bar.close()
    out = Path(args.output)
    for i, image in enumerate(images):
        path = out if len(images) == 1 else out.with_name(f"{out.stem}_{i}{out.suffix}")
        settings = {"steps": args.steps, "sampler": args.sampler, "guidance_scale": guidance, "tiling": tiling,
                    "size": list(image.size), "negative_prompt": args.negative or "",
                    "strength": args.strength if init else None}
        atomic_write_bytes(path, encode_png(image, {
            "prompt": image.info["prompt"], "seed": image.info["seed"], "settings": json.dumps(settings),
            "model_hash": imagen.model_hash, "software": "imagen-for-blender"}))
        print(f"{path}  seed={image.info['seed']}")
    return 0


def cmd_train(args) -> int:
    from .train.config import load_config  # noqa: PLC0415

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from .train.trainer import train  # noqa: PLC0415

    run = train(cfg, resume=args.resume)
    print(f"run finished: {run}  (export with: imagen export {run} MODEL_DIR)")
    return 0


def cmd_export(args) -> int:
    from .train.trainer import export_run  # noqa: PLC0415

    dtype = None
    if args.fp16:
        import torch  # noqa: PLC0415

        dtype = torch.float16
    print(export_run(args.run_dir, args.out_dir, dtype))
    return 0


def cmd_info(args) -> int:
    from .core.imagen import Imagen  # noqa: PLC0415

    print(json.dumps(Imagen.from_pretrained(args.model).info(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagen", description="Imagen for Blender: offline text-to-image")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate images from a prompt")
    g.add_argument("prompt")
    g.add_argument("-o", "--output", default="out.png")
    g.add_argument("--seed", type=int)
    g.add_argument("--steps", type=int, default=20)
    g.add_argument("--sampler", choices=("ancestral", "ddim", "dpmpp", "dpmpp_sde"), default="dpmpp")
    g.add_argument("--guidance", type=float, nargs="+", default=[5.0], help="the base stage's weight (SR stages unguided), or one value per stage")
    g.add_argument("--size", type=_size, help="WxH of the final image, e.g. 256x128")
    g.add_argument("--tiling", choices=("none", "x", "xy"), default="none")
    g.add_argument("--panorama", action="store_true", help="2:1 image that wraps horizontally (tiling x)")
    g.add_argument("--negative", default=None, help="negative prompt")
    g.add_argument("--init", help="init image for image-to-image")
    g.add_argument("--strength", type=float, default=0.7)
    g.add_argument("--model", help="model folder (default: the bundled model)")
    g.add_argument("--count", type=int, default=1)
    g.add_argument("--device", default="cpu")
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("train", help="train a cascade (accelerate launch -m imagen_addon.cli train ... for GPUs)")
    t.add_argument("--config", help="JSON config (e.g. configs/bundled.json)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=[2000,1000] batch_size=64")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="export a run's EMA weights as a model folder")
    e.add_argument("run_dir")
    e.add_argument("out_dir")
    e.add_argument("--fp16", action="store_true", help="store weights in float16 (half the size)")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="describe a model folder")
    i.add_argument("--model")
    i.set_defaults(func=cmd_info)

    for name, help_ in (("data", "datasets: `imagen data worlds --out DIR --count N --size S`"),
                        ("eval", "evaluate prompt following on held-out procedural prompts"),
                        ("serve", "run the HTTP runtime that Blender talks to")):
        p = sub.add_parser(name, help=help_, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=None)
    return parser


def _delegate(command: str, rest: list[str]) -> int:
    """Subcommands that own their argument parsing."""
    if command == "data":
        if not rest or rest[0] != "worlds":
            raise UsageError("usage: imagen data worlds --out DIR --count N --size S [--seed K]")
        from .data import worlds  # noqa: PLC0415

        return worlds.cli_main(rest[1:])
    if command == "eval":
        from .eval import evaluate  # noqa: PLC0415

        return evaluate.cli_main(rest)
    from .runtime import server  # noqa: PLC0415

    return server.cli_main(rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    delegated = bool(argv) and argv[0] in ("data", "eval", "serve")
    args = None if delegated else build_parser().parse_args(argv)
    try:
        if args is None:
            return _delegate(argv[0], argv[1:])
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - known library errors get one line too
        from .core.checkpoint import CheckpointError  # noqa: PLC0415
        from .core.text import TextEncoderError  # noqa: PLC0415

        if isinstance(e, (CheckpointError, TextEncoderError)):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
