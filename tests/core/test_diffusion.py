import pytest
import torch

from imagen_addon.core.diffusion import (DiffusionConfig, alpha_sigma, log_snr, log_snr_cosine, log_snr_linear,
                                         q_sample, target, to_x0)


def test_cosine_schedule_endpoints_and_monotonic():
    t = torch.linspace(0, 1, 101)
    l = log_snr_cosine(t, -15.0, 15.0)
    assert l[0].item() == pytest.approx(15.0, abs=1e-3) and l[-1].item() == pytest.approx(-15.0, abs=1e-3)
    assert (l[1:] < l[:-1]).all()
    assert (log_snr_linear(t)[1:] < log_snr_linear(t)[:-1]).all()


def test_variance_preserving():
    l = torch.linspace(-10, 10, 50)
    a, s = alpha_sigma(l)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(l), atol=1e-6)
    assert torch.allclose(torch.log(a ** 2 / s ** 2), l, atol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_target_inverts_to_x0(prediction):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    l = torch.tensor([-4.0, -1.0, 2.0, 6.0])
    x_t = q_sample(x0, l, eps)
    assert torch.allclose(to_x0(target(x0, eps, l, prediction), x_t, l, prediction), x0, atol=1e-4)


def test_config_validation():
    with pytest.raises(ValueError):
        DiffusionConfig(schedule="quadratic")
    with pytest.raises(ValueError):
        DiffusionConfig(prediction="x")
    with pytest.raises(ValueError):
        DiffusionConfig(cond_drop_prob=1.5)
    assert log_snr(torch.tensor([0.0]), DiffusionConfig())[0] == pytest.approx(15.0, abs=1e-3)
