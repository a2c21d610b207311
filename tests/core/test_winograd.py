"""Winograd F(m x m, 3x3) convolutions (core/winograd.py): exact in float64, fp32 to rounding, gradients
included; the rule that picks them; and the U-Net's padded convolution with and without them."""

import pytest
import torch
import torch.nn.functional as F

from imagen_addon.core import winograd
from imagen_addon.core.unet import padded_conv2d
from imagen_addon.core.winograd import tile_size, winograd_conv2d


def _inputs(n, cin, cout, h, w, dtype=torch.float64, layout=torch.channels_last, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g, dtype=dtype).contiguous(memory_format=layout).requires_grad_(True)
    weight = torch.randn(cout, cin, 3, 3, generator=g, dtype=dtype).contiguous(memory_format=layout)
    bias = torch.randn(cout, generator=g, dtype=dtype)
    return x, weight.requires_grad_(True), bias.requires_grad_(True)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_equals_direct_convolution_in_float64_with_gradients(m, layout):
    x, weight, bias = _inputs(2, 5, 3, 2 + 2 * m, 2 + 3 * m, layout=layout)   # non-square: 2 x 3 tiles
    y, ref = winograd_conv2d(x, weight, bias, m), F.conv2d(x, weight, bias)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-11)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((y * g).sum(), (x, weight, bias)),
                    torch.autograd.grad((ref * g).sum(), (x, weight, bias))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("m", [2, 4])
def test_gradcheck(m):
    x, weight, bias = _inputs(1, 2, 3, m + 2, 2 * m + 2)
    assert torch.autograd.gradcheck(lambda *a: winograd_conv2d(*a, m=m), (x, weight, bias))


def test_fp32_wide_layer_to_rounding_and_without_bias_or_input_grad():
    x, weight, _ = _inputs(2, 96, 128, 18, 10, dtype=torch.float32)
    x.requires_grad_(False)
    y = winograd_conv2d(x, weight, None, 4)
    ref = F.conv2d(x, weight)
    assert (y - ref).abs().max() <= 1e-4 * ref.abs().max()
    [dw] = torch.autograd.grad(y.square().sum(), [weight])
    [dw_ref] = torch.autograd.grad(ref.square().sum(), [weight])
    assert (dw - dw_ref).abs().max() <= 1e-4 * dw_ref.abs().max()
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_tile_size_rule(monkeypatch):
    def rule(c=96, h=8, w=8, dtype=torch.float32, layout=torch.channels_last, stride=1, cout=None, n=16):
        x = torch.zeros(n, c, h, w, dtype=dtype).contiguous(memory_format=layout)
        return tile_size(x, torch.zeros(cout or c, c, 3, 3, dtype=dtype), stride)

    assert rule() == 4 and rule(h=16, w=32) == 4
    assert rule(h=6, w=6, n=32) == 2 and rule(h=8, w=6, n=32) == 2
    assert rule(h=7) == 0                                   # odd
    assert rule(n=2) == 0 and rule(n=2, h=32, w=16) == 4     # too few pixels for the weight transform to pay
    with torch.inference_mode():                             # no backward to share the transforms with
        assert rule() == 0 and rule(n=16, h=16, w=16) == 4
    assert rule(c=64) == 0 and rule(cout=48) == 0            # narrow layers stay direct
    assert rule(layout=torch.contiguous_format) == 0
    assert rule(dtype=torch.float64) == 0 and rule(stride=2) == 0 and rule(stride=(2, 2)) == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rule() == 0
    monkeypatch.setattr(winograd, "ENABLED", False)
    assert rule() == 0


def test_torch_compile_keeps_the_direct_path(monkeypatch):
    """Inductor plans its own convolutions; traced, the Winograd Function was slower than eager."""
    x = torch.zeros(16, 96, 8, 8).contiguous(memory_format=torch.channels_last)
    weight = torch.zeros(96, 96, 3, 3)
    assert tile_size(x, weight, 1) == 4
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert tile_size(x, weight, 1) == 0


@pytest.mark.parametrize("tiling", ["none", "x", "xy"])
def test_unet_padded_convolution_same_with_and_without_winograd(tiling, monkeypatch):
    x, weight, bias = _inputs(8, 96, 96, 8, 16, dtype=torch.float32)
    assert tile_size(x, weight, 1) == 4
    fast = padded_conv2d(x, weight, bias, 1, 1, tiling)
    fast_grads = torch.autograd.grad(fast.square().sum(), (x, weight, bias))
    monkeypatch.setattr(winograd, "ENABLED", False)
    direct = padded_conv2d(x, weight, bias, 1, 1, tiling)
    direct_grads = torch.autograd.grad(direct.square().sum(), (x, weight, bias))
    assert (fast - direct).abs().max() <= 1e-4 * direct.abs().max()
    for a, b in zip(fast_grads, direct_grads):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()


def test_unet_training_gradients_same_with_and_without_winograd(monkeypatch):
    """A whole channels_last U-Net, as the trainer runs it: the same loss and parameter gradients either way."""
    from imagen_addon.core import unet
    from imagen_addon.core.unet import EfficientUNet, UNetConfig

    torch.manual_seed(0)
    net = EfficientUNet(UNetConfig(image_size=16, base_channels=96, channel_mults=(1, 2), num_res_blocks=(1, 1),
                                   cross_attn_resolutions=(8,), head_dim=32, groups=8))
    net.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    text, mask = torch.randn(4, 5, net.cfg.text_dim), torch.ones(4, 5, dtype=torch.bool)
    calls = []
    monkeypatch.setattr(unet, "winograd_conv2d", lambda *a: calls.append(a[-1]) or winograd_conv2d(*a))

    def grads():
        net.zero_grad(set_to_none=True)
        net(x, torch.zeros(4), text, mask).square().mean().backward()
        return [p.grad.clone() for p in net.parameters()]

    fast = grads()
    assert calls, "no layer took the Winograd path"
    monkeypatch.setattr(winograd, "ENABLED", False)
    direct = grads()
    for a, b in zip(fast, direct):
        assert (a - b).abs().max() <= 1e-3 * b.abs().max() + 1e-7
