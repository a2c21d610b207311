"""The README's main job (`make demo`): a headless Blender scene dressed by the add-on with the bundled model.

    python tools/demo.py [--model DIR] [--out out/demo.png] [--size 320x180] [--samples 16] [--steps 25]

Blender runs as a Python module (`import bpy`) with a throw-away user folder, so the real Blender configuration is
never touched. The add-on in this checkout is enabled as a legacy add-on named `imagen` (a link to the repository
in that folder), its preferences point at the model, and from then on everything goes through the add-on's own
code: the launcher starts the runtime (`python -m imagen_addon.runtime.server`), `imagen.generate` makes a sky
panorama that `imagen.set_world` puts behind the scene, a second `imagen.generate` makes a seamless brick texture
that `imagen.apply_material` puts on the props, then Cycles renders on the CPU and the runtime is stopped.
Expected failures (no bpy, no model, the runtime does not start, ...) end with one line and exit code 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDON = "imagen"
SKY = "a landscape with mountains under a sunset sky"
TEXTURE = "a seamless texture of red bricks"


class DemoError(Exception):
    """An expected failure: the message says what went wrong and what to do."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="", help="model folder (default: the bundled model in imagen_addon/weights)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "demo.png", help="rendered PNG (default out/demo.png)")
    p.add_argument("--size", default="320x180", help="render size WxH (default 320x180)")
    p.add_argument("--samples", type=int, default=16, help="Cycles samples (default 16)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps per generation (default 25)")
    p.add_argument("--seed", type=int, default=7, help="seed of the sky; the texture uses seed + 1 (default 7)")
    args = p.parse_args(argv)
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must look like 320x180, not {args.size!r}")
    return args


def check_model(model: str) -> str:
    """The model folder to use ("" = the bundled one), refused early with a helpful message when missing."""
    folder = Path(model).expanduser().resolve() if model else ROOT / "imagen_addon" / "weights" / "default"
    if (folder / "imagen.json").is_file():
        return str(folder) if model else ""
    if model:
        raise DemoError(f"{folder} is not an Imagen model folder (no imagen.json)")
    raise DemoError(f"the bundled model is missing ({folder}): pass --model DIR, e.g. a folder written by "
                    "`imagen export runs/bundled DIR`")


def start_blender(home: Path):
    """Import bpy with its user folder in `home` and enable this checkout's add-on; returns (bpy, add-on module)."""
    os.environ["BLENDER_USER_RESOURCES"] = str(home)  # read when bpy starts: keep the real configuration out
    os.environ["XDG_DATA_HOME"] = str(home / "data")  # the runtime's result folder (inherited by the launcher)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the runtime reads the text encoder from disk only
    try:
        import bpy
    except ImportError as err:
        raise DemoError(f"Blender as a Python module is not installed ({err}): run `make setup`") from None
    import addon_utils

    bpy.ops.wm.read_factory_settings(use_empty=True)
    (home / "addons").mkdir()
    (home / "addons" / ADDON).symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(home / "addons"))
    module = addon_utils.enable(ADDON, default_set=True, handle_error=None)
    if module is None or ADDON not in bpy.context.preferences.addons:
        raise DemoError("the Imagen add-on could not be enabled in Blender")
    return bpy, module


def build_scene(bpy, width: int, height: int) -> list:
    """Ground plane, cube and sphere props (with UVs), sun, camera; small CPU Cycles settings come later."""
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=40.0)
    ground = bpy.context.active_object
    grey = bpy.data.materials.new("Ground")
    grey.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.25, 0.23, 0.2, 1.0)
    ground.data.materials.append(grey)
    bpy.ops.mesh.primitive_cube_add(size=1.6, location=(-1.1, 0.4, 0.8), rotation=(0, 0, 0.5))
    cube = bpy.context.active_object
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.8, location=(1.2, -0.2, 0.8), segments=48, ring_count=24)
    sphere = bpy.context.active_object
    bpy.ops.object.shade_smooth()
    bpy.ops.object.light_add(type="SUN", location=(4, -4, 8), rotation=(0.7, 0.2, 0.6))
    bpy.context.active_object.data.energy = 3.0
    bpy.ops.object.camera_add(location=(0.0, -7.5, 1.4), rotation=(1.52, 0.0, 0.0))
    scene.camera = bpy.context.active_object
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = width, height, 100
    return [cube, sphere]


def generate(bpy, prompt: str, seed: int, steps: int, panorama: bool = False, tiling: str = "none"):
    """The Generate button (synchronous in background mode); returns the new image datablock."""
    settings = bpy.context.scene.imagen
    settings.prompt, settings.seed, settings.random_seed, settings.steps = prompt, seed, False, steps
    settings.panorama, settings.tiling = panorama, tiling
    call_operator(bpy.ops.imagen.generate)
    return settings.image


def call_operator(op, **kwargs) -> None:
    """Run an operator; its ERROR report (raised by bpy as RuntimeError) becomes a DemoError."""
    try:
        result = op(**kwargs)
    except RuntimeError as err:
        raise DemoError(str(err).replace("Error: ", "").strip()) from None
    if result != {"FINISHED"}:
        raise DemoError(f"{op.idname_py()} returned {result}")


def render(bpy, out: Path, samples: int) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", samples
    scene.cycles.use_denoising = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(out)
    bpy.ops.render.render(write_still=True)
    if not out.is_file():
        raise DemoError(f"Cycles did not write {out}")


def run(args: argparse.Namespace, home: Path) -> dict[str, float]:
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name], clock = now - clock, now
        print(f"  {name}: {timings[name]:.1f} s", flush=True)

    model = check_model(args.model)
    args.out = args.out.expanduser().resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print("Imagen demo: starting Blender", flush=True)
    bpy, addon = start_blender(home)
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.runtime_mode, prefs.python_path, prefs.model_dir = "LOCAL", sys.executable, model
    prefs.auto_start, prefs.timeout, prefs.output_dir = True, 120.0, str(home / "images")
    props = build_scene(bpy, args.width, args.height)
    lap("blender + scene")

    worker = sys.modules[f"{addon.__name__}.imagen_addon.blender.worker"]
    config = sys.modules[f"{addon.__name__}.imagen_addon.blender.preferences"].runtime_config(bpy.context)
    print(f"Starting the runtime ({model or 'bundled model'})", flush=True)
    try:
        info = worker.launcher_for(config).ensure_running()
    except Exception as err:  # LauncherError: why it did not start, with the runtime's last output
        raise DemoError(f"the runtime did not start: {str(err).strip()}") from None
    lap("runtime start")
    try:
        print(f"Generating the sky: {SKY!r}", flush=True)
        sky = generate(bpy, SKY, args.seed, args.steps, panorama=True)
        call_operator(bpy.ops.imagen.set_world, image_name=sky.name)
        lap("sky panorama")
        print(f"Generating the texture: {TEXTURE!r}", flush=True)
        texture = generate(bpy, TEXTURE, args.seed + 1, args.steps, tiling="xy")
        for obj in bpy.context.view_layer.objects:
            obj.select_set(obj in props)
        bpy.context.view_layer.objects.active = props[0]
        bpy.context.scene.imagen.texture_scale = 2.0
        call_operator(bpy.ops.imagen.apply_material, image_name=texture.name)
        lap("seamless texture")
    finally:
        worker.stop_all_launchers()
    print(f"Runtime stopped (pid {info.pid})", flush=True)
    stem = args.out.with_suffix("")
    for image, suffix in ((sky, "sky"), (texture, "texture")):
        shutil.copyfile(bpy.path.abspath(image.filepath), f"{stem}_{suffix}.png")
    print(f"Rendering {args.width}x{args.height}, {args.samples} samples (Cycles, CPU)", flush=True)
    render(bpy, args.out, args.samples)
    lap("render")
    return timings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="imagen-demo-"))
    started = time.perf_counter()
    try:
        run(args, home)
    except DemoError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(home, ignore_errors=True)
    stem = args.out.with_suffix("")
    print(f"Done in {time.perf_counter() - started:.1f} s")
    print(f"  render:  {args.out}\n  sky:     {stem}_sky.png\n  texture: {stem}_texture.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
