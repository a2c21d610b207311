import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from imagen_addon.core.checkpoint import CheckpointError
from imagen_addon.core.imagen import Imagen, tiny_config


def arr(image):
    return np.asarray(image, dtype=np.int16)


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, imagen_addon; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generate_shapes_sizes_and_metadata(tiny_imagen):
    [image] = tiny_imagen.generate("a red ball", seed=1, steps=3)
    assert image.size == (32, 32) and image.mode == "RGB"
    assert image.info["prompt"] == "a red ball" and image.info["seed"] == "1"
    [pano] = tiny_imagen.generate("a sunset", seed=1, steps=2, size=(64, 32), tiling="x")
    assert pano.size == (64, 32)
    with pytest.raises(ValueError, match="multiples of 4"):
        tiny_imagen.generate("x", size=(30, 32))
    with pytest.raises(ValueError, match="tiling"):
        tiny_imagen.generate("x", tiling="diagonal")


def test_seed_gives_same_image_whatever_the_batch(tiny_imagen):
    batch = tiny_imagen.generate(["a red ball", "a blue cube", "snow"], seed=10, steps=4, sampler="ancestral")
    alone = tiny_imagen.generate("a blue cube", seed=11, steps=4, sampler="ancestral")[0]
    assert np.abs(arr(batch[1]) - arr(alone)).max() <= 1
    assert np.abs(arr(batch[0]) - arr(batch[1])).max() > 1


def test_img2img_inpaint_upscale(tiny_imagen):
    init = Image.new("RGB", (32, 32), (200, 40, 40))
    [same] = tiny_imagen.generate("x", init_image=init, strength=0.0, seed=0, steps=4)
    assert np.abs(arr(same) - arr(init)).max() <= 2
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))
    [filled] = tiny_imagen.generate("x", init_image=init, mask=mask, strength=1.0, seed=0, steps=4)
    assert np.abs(arr(filled)[:, 24:] - arr(init)[:, 24:]).max() <= 3  # the kept half stays
    up = tiny_imagen.upscale(Image.new("RGB", (16, 8), (45, 85, 200)), "blue", steps=3, seed=0)
    assert up.size == (32, 16)


def test_cancel(tiny_imagen):
    from imagen_addon.core.imagen import Cancelled

    calls = []

    def cb(p):
        calls.append((p.stage, p.step, p.steps))
        assert p.preview().size[0] <= 128
        return len(calls) < 3

    with pytest.raises(Cancelled):
        tiny_imagen.generate("x", steps=5, callback=cb)
    assert calls == [(0, 1, 5), (0, 2, 5), (0, 3, 5)]


def test_save_load_round_trip_bit_exact(tiny_imagen, tiny_model_dir):
    loaded = Imagen.from_pretrained(tiny_model_dir)
    for a, b in zip(tiny_imagen.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    x = tiny_imagen.generate("a tree", seed=3, steps=3)[0]
    y = loaded.generate("a tree", seed=3, steps=3)[0]
    assert np.array_equal(arr(x), arr(y))
    index = json.loads((tiny_model_dir / "imagen.json").read_text())
    assert index["text_encoder"]["name"] == "minilm" and index["stages"] == ["stage_0", "stage_1"]
    assert loaded.model_hash == tiny_imagen.model_hash != "untrained"


def test_loaded_model_is_channels_last_with_the_same_files(tiny_model_dir, tmp_path):
    """from_pretrained switches the convolutions to channels_last (a CPU fast path); saving it again writes the
    same bytes, so the model hash is unchanged."""
    loaded = Imagen.from_pretrained(tiny_model_dir)
    assert loaded.stages[0].unet.stem.weight.is_contiguous(memory_format=torch.channels_last)
    loaded.save_pretrained(tmp_path / "again")
    assert Imagen.from_pretrained(tmp_path / "again").model_hash == loaded.model_hash


def copy_model(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_refuses_another_encoder(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "m")
    index = json.loads((d / "imagen.json").read_text())
    index["text_encoder"]["hash"] = "0123456789abcdef"
    (d / "imagen.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="trained with text encoder"):
        Imagen.from_pretrained(d)


def test_mismatched_shapes_are_named(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((d / "stage_0" / "config.json").read_text())
    cfg["unet"]["base_channels"] = 32
    (d / "stage_0" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"shape unet\.\S+: file \(16,\) vs model \(32,\)"):
        Imagen.from_pretrained(d)


def test_truncated_and_pickled_weights(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "m")
    weights = d / "stage_1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        Imagen.from_pretrained(d)

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle executed')",))

    weights.write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(CheckpointError):
        Imagen.from_pretrained(d)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(CheckpointError, match="imagen.json is missing"):
        Imagen.from_pretrained(tmp_path)


def test_config_validation():
    cfg = tiny_config()
    from imagen_addon.core.imagen import ImagenConfig

    with pytest.raises(ValueError, match="base"):
        ImagenConfig(stages=cfg.stages[1:])
    with pytest.raises(ValueError, match="lowres_size"):
        ImagenConfig(stages=(cfg.stages[0], cfg.stages[0]))


@pytest.mark.parametrize("tiling", ["x", "xy"])
def test_tiled_cascade_commutes_with_rolls_by_the_size_multiple(tiny_imagen, monkeypatch, tiling):
    """With circular padding every stage commutes with rolls on its block grid, so the whole cascade commutes with
    rolls of the output by `size_multiple`: rolling every stage's noise rolls the image. The wrap pair of columns
    is then drawn exactly like the interior pairs at the same phase of that grid (the eval's 'same phase' seam)."""
    import copy

    from imagen_addon.core import imagen as imagen_mod
    from imagen_addon.core import stage as stage_mod
    from imagen_addon.core.samplers import randn

    imagen = copy.deepcopy(tiny_imagen)
    torch.manual_seed(0)
    with torch.no_grad():  # fresh output layers are zero: give every weight a value
        for p in imagen.stages.parameters():
            p.normal_(0, 0.1)
    m, final = imagen.size_multiple, imagen.config.stages[-1].image_size
    dims = (-1,) if tiling == "x" else (-2, -1)
    kwargs = dict(seed=3, steps=3, sampler="dpmpp")

    def output(shift: int, padding: str) -> np.ndarray:
        def rolled_randn(shape, generators, device=None, dtype=None):
            noise = randn(shape, generators, device, dtype)
            return torch.roll(noise, [shift * shape[-1] // final] * len(dims), dims)

        monkeypatch.setattr(imagen_mod, "randn", rolled_randn)
        monkeypatch.setattr(stage_mod, "randn", rolled_randn)
        image = np.asarray(imagen.generate("a red and blue checkerboard", tiling=padding, **kwargs)[0], np.int16)
        return np.roll(image, [-shift] * len(dims), [a - 1 for a in dims])  # HWC: roll back on H, W

    plain = output(0, tiling)
    assert plain.std() > 5
    assert np.abs(output(m, tiling) - plain).max() <= 1  # uint8 rounding
    assert np.abs(output(m, "none") - output(0, "none")).max() > 3  # zero padding: the borders differ


@pytest.mark.parametrize("tiling", ["none", "x"])
def test_bundled_images_unchanged_by_the_sub_pixel_up_convolutions(monkeypatch, tiling):
    """The U-Net computes 'upsample, then 3x3 conv' as one sub-pixel convolution; the bundled model's images are
    those of the plain pair (to rounding), the 360-degree panorama's wrap-around included."""
    from imagen_addon.core.unet import NearestUpConv

    bundled = Imagen.from_pretrained()
    kw = dict(seed=7, steps=4, size=(256, 128) if tiling == "x" else None, tiling=tiling)
    [fast] = bundled.generate("a landscape with a red ball on green grass under a clear sky", **kw)
    monkeypatch.setattr(NearestUpConv, "forward", NearestUpConv.reference)
    [plain] = bundled.generate("a landscape with a red ball on green grass under a clear sky", **kw)
    assert np.abs(arr(fast) - arr(plain)).max() <= 2


@pytest.mark.parametrize("tiling", ["none", "x"])
def test_bundled_images_unchanged_by_winograd_convolutions(monkeypatch, tiling):
    """Wide 3x3 convolutions can run as Winograd F(4x4, 3x3) on CPU (core/winograd.py). Forced on for every layer
    of 32 or more channels (in sampling the thresholds keep the bundled model on the direct path), its images are
    those of the direct convolutions (to rounding), the 360-degree panorama's wrap-around included."""
    from imagen_addon.core import unet, winograd

    bundled = Imagen.from_pretrained()
    kw = dict(seed=7, steps=4, size=(256, 128) if tiling == "x" else None, tiling=tiling)
    [direct] = bundled.generate("a landscape with a red ball on green grass under a clear sky", **kw)
    calls = []
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 32)
    monkeypatch.setattr(winograd, "MIN_PIXELS_INFERENCE", 0)
    monkeypatch.setattr(unet, "winograd_conv2d", lambda *a: calls.append(a[-1]) or winograd.winograd_conv2d(*a))
    [fast] = bundled.generate("a landscape with a red ball on green grass under a clear sky", **kw)
    assert len(calls) > 100 and set(calls) == {4}
    assert np.abs(arr(fast) - arr(direct)).max() <= 2
