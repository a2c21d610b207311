import pytest
import torch

from imagen_addon.core.unet import EfficientUNet, NearestUpConv, UNetConfig


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


@pytest.mark.parametrize("tiling", ["none", "x", "xy"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_nearest_up_conv_equals_upsample_then_conv(tiling, layout):
    """The sub-pixel form is the same function as nearest upsampling + 3x3 convolution, gradients included."""
    up = NearestUpConv(6, 5)
    torch.manual_seed(0)
    with torch.no_grad():
        up[1].bias.normal_()
    up[1].tiling = tiling
    x = torch.randn(2, 6, 4, 6).to(memory_format=layout)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = up(x1), up.reference(x2)
    assert out.shape == (2, 5, 8, 12) and out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, (x1, up[1].weight, up[1].bias), grad)
    want = torch.autograd.grad(ref, (x2, up[1].weight, up[1].bias), grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    assert list(up.state_dict()) == ["1.weight", "1.bias"]  # the keys of the plain pair: checkpoints unchanged


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
