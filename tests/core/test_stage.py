import pytest
import torch
import torch.nn.functional as F

from imagen_addon.core.stage import upsample


@pytest.mark.parametrize("tiling,dims", [("x", (-1,)), ("xy", (-2, -1))])
def test_seamless_upsample_is_roll_equivariant(tiling, dims):
    """Upsampling a seamless image commutes with rolling it: the wrapped edge is interpolated like the interior."""
    torch.manual_seed(0)
    low = torch.randn(2, 3, 8, 16)
    up = upsample(low, (32, 64), tiling)
    for shift in (1, 3):
        rolled = upsample(torch.roll(low, [shift] * len(dims), dims), (32, 64), tiling)
        torch.testing.assert_close(rolled, torch.roll(up, [4 * shift] * len(dims), dims))


def test_seamless_upsample_matches_plain_bilinear_inside():
    """Away from the wrapped edges the seamless upsample is the plain one; at the edge it differs (it wraps)."""
    torch.manual_seed(1)
    low = torch.randn(1, 3, 8, 8)
    plain = F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    up = upsample(low, (32, 32), "xy")
    torch.testing.assert_close(up[..., 2:-2, 2:-2], plain[..., 2:-2, 2:-2])
    assert not torch.allclose(up[..., 0], plain[..., 0])
    torch.testing.assert_close(upsample(low, (32, 32), "none"), plain)
    torch.testing.assert_close(upsample(low, (32, 32), "x")[..., 2:-2, :], upsample(low, (32, 32), "xy")[..., 2:-2, :])


def test_seamless_upsample_needs_an_integer_scale():
    with pytest.raises(ValueError, match="integer scale"):
        upsample(torch.zeros(1, 3, 8, 8), (30, 32), "x")
