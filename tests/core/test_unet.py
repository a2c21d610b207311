import pytest
import torch

from imagen_addon.core.unet import EfficientUNet, UNetConfig


def tiny(**kw):
    base = dict(image_size=16, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=(1, 1, 2),
                cross_attn_resolutions=(8, 4), head_dim=8, groups=4, text_dim=12)
    base.update(kw)
    return UNetConfig(**base)


def randomize(net):
    """Zero-initialised output layers make a fresh U-Net constant; give every weight a value for these checks."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


def inputs(b=2, h=16, w=16, length=5):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 3, h, w, generator=g)
    text = torch.randn(b, length, 12, generator=g)
    mask = torch.ones(b, length, dtype=torch.bool)
    return x, torch.linspace(-5, 5, b), text, mask


def test_shapes_base_and_sr():
    net = randomize(EfficientUNet(tiny()))
    x, l, text, mask = inputs()
    assert net(x, l, text, mask).shape == x.shape
    sr = randomize(EfficientUNet(tiny(lowres_channels=3, image_size=32, cross_attn_resolutions=())))
    x, l, text, mask = inputs(h=32, w=64)
    assert sr(x, l, text, mask, lowres=torch.randn_like(x), aug_log_snr=l).shape == x.shape
    with pytest.raises(ValueError, match="lowres"):
        sr(x, l, text, mask)


def test_masked_tokens_do_not_matter_and_text_does():
    net = randomize(EfficientUNet(tiny()))
    x, l, text, mask = inputs()
    mask[:, 3:] = False
    out = net(x, l, text, mask)
    changed = text.clone()
    changed[:, 3:] = 100.0
    assert torch.allclose(net(x, l, changed, mask), out, atol=1e-5)
    changed[:, 0] += 1.0
    assert not torch.allclose(net(x, l, changed, mask), out, atol=1e-3)


def test_fully_masked_text_is_finite():
    net = randomize(EfficientUNet(tiny()))
    x, l, text, mask = inputs()
    assert torch.isfinite(net(x, l, text, torch.zeros_like(mask))).all()


@pytest.mark.parametrize("tiling,dims", [("x", (3,)), ("xy", (2, 3))])
def test_circular_padding_wraps(tiling, dims):
    """With circular padding the network commutes with (stride-aligned) rolls: the left edge continues the right."""
    net = randomize(EfficientUNet(tiny()))
    x, l, text, mask = inputs(h=16, w=32)
    shift = 4  # a multiple of the total downsampling factor (2 ** 2)
    out = net(x, l, text, mask, tiling=tiling)
    rolled = net(torch.roll(x, [shift] * len(dims), dims), l, text, mask, tiling=tiling)
    assert torch.allclose(rolled, torch.roll(out, [shift] * len(dims), dims), atol=1e-4)
    zeros = net(torch.roll(x, [shift] * len(dims), dims), l, text, mask, tiling="none")
    assert not torch.allclose(zeros, torch.roll(out, [shift] * len(dims), dims), atol=1e-3)


def test_config_validation():
    with pytest.raises(ValueError, match="do not exist"):
        tiny(cross_attn_resolutions=(32,))
    with pytest.raises(ValueError, match="one entry per level"):
        tiny(num_res_blocks=(1, 1))
    with pytest.raises(ValueError, match="divisible"):
        tiny(image_size=18)
    with pytest.raises(ValueError, match="tiling"):
        net = EfficientUNet(tiny())
        net(*inputs(), tiling="y")


def test_config_json_round_trip():
    import json

    cfg = tiny()
    assert UNetConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg
