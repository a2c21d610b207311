"""Closed-form checks: for Gaussian data the optimal denoiser is known, so samplers must reproduce the data."""

import pytest
import torch

from imagen_addon.core.diffusion import DiffusionConfig, alpha_sigma, log_snr
from imagen_addon.core.samplers import (Cancelled, classifier_free_guidance, dynamic_threshold, get_sampler, inpaint,
                                        randn)

MU, STD = 0.3, 0.5


def gaussian_denoiser(x, l):
    """E[x0 | x_t] for x0 ~ N(MU, STD^2): MU + alpha STD^2 / (alpha^2 STD^2 + sigma^2) (x_t - alpha MU)."""
    a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(l))
    return MU + a * STD ** 2 / (a ** 2 * STD ** 2 + s ** 2) * (x - a * MU)


@pytest.mark.parametrize("name,steps", [("ancestral", 250), ("ddim", 50), ("dpmpp", 20), ("dpmpp", 10),
                                        ("dpmpp_sde", 20)])
def test_sampler_matches_gaussian_data(name, steps):
    n = 4000
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    l = log_snr(torch.linspace(1, 0, steps + 1), DiffusionConfig())
    x = randn((n, 1, 2, 2), gens)
    out = get_sampler(name)(gaussian_denoiser, x, l, generators=gens)
    assert out.mean().item() == pytest.approx(MU, abs=0.03)
    assert out.std().item() == pytest.approx(STD, abs=0.03)


def test_ddim_eta_one_is_stochastic_and_matches():
    from imagen_addon.core.samplers import sample_ddim

    n = 4000
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    l = log_snr(torch.linspace(1, 0, 251), DiffusionConfig())  # stochastic samplers need many steps
    out = sample_ddim(gaussian_denoiser, randn((n, 1, 2, 2), gens), l, eta=1.0, generators=gens)
    assert out.std().item() == pytest.approx(STD, abs=0.03)


def test_dpmpp_sde_first_order_is_the_ancestral_step():
    """With a denoiser whose x0 never changes, the second-order correction vanishes and SDE-DPM-Solver++(2M)
    takes exactly the ancestral (DDPM posterior) steps, noise included."""
    l = log_snr(torch.linspace(1, 0, 9), DiffusionConfig())
    x0 = torch.full((2, 1, 3, 3), 0.25)
    x = randn((2, 1, 3, 3), [torch.Generator().manual_seed(s) for s in (1, 2)])
    runs = [get_sampler(name)(lambda x_t, l_t: x0, x, l, generators=[torch.Generator().manual_seed(s) for s in (3, 4)])
            for name in ("ancestral", "dpmpp_sde")]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)


def test_per_sample_noise_independent_of_batch():
    gens = [torch.Generator().manual_seed(s) for s in (7, 8, 9)]
    batch = randn((3, 2, 4, 4), gens)
    alone = randn((1, 2, 4, 4), [torch.Generator().manual_seed(8)])
    assert torch.equal(batch[1:2], alone)


def test_callback_progress_and_cancel():
    l = log_snr(torch.linspace(1, 0, 6), DiffusionConfig())
    seen = []
    get_sampler("dpmpp")(gaussian_denoiser, torch.randn(2, 1, 2, 2), l, callback=lambda i, n, x, x0: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(5)]
    with pytest.raises(Cancelled):
        get_sampler("ddim")(gaussian_denoiser, torch.randn(2, 1, 2, 2), l, callback=lambda *a: False)
    with pytest.raises(ValueError):
        get_sampler("euler")


def test_guidance_scale_one_is_conditional():
    def model(x, l, text):
        return x * text.view(-1, 1, 1, 1)

    cond, uncond = {"text": torch.tensor([2.0, 3.0])}, {"text": torch.tensor([0.5, 0.5])}
    x, l = torch.randn(2, 1, 2, 2), torch.zeros(2)
    assert torch.equal(classifier_free_guidance(model, cond, uncond, 1.0)(x, l), model(x, l, **cond))
    guided = classifier_free_guidance(model, cond, uncond, 4.0)(x, l)
    expected = model(x, l, **uncond) + 4.0 * (model(x, l, **cond) - model(x, l, **uncond))
    assert torch.allclose(guided, expected, atol=1e-6)


def test_guidance_pads_text_of_different_lengths():
    def model(x, l, text, text_mask):
        return x + (text.sum((1, 2)) * text_mask.sum(1)).view(-1, 1, 1, 1)

    cond = {"text": torch.ones(2, 5, 3), "text_mask": torch.ones(2, 5, dtype=torch.bool)}
    uncond = {"text": torch.zeros(2, 1, 3), "text_mask": torch.zeros(2, 1, dtype=torch.bool)}
    out = classifier_free_guidance(model, cond, uncond, 2.0)(torch.zeros(2, 1, 1, 1), torch.zeros(2))
    assert torch.allclose(out, torch.full((2, 1, 1, 1), 2.0 * 75))


def test_dynamic_threshold():
    inside = torch.rand(2, 3, 4, 4) * 1.8 - 0.9
    assert torch.equal(dynamic_threshold(lambda x, l: x)(inside, torch.zeros(2)), inside)
    wild = torch.randn(2, 3, 8, 8) * 5
    out = dynamic_threshold(lambda x, l: x)(wild, torch.zeros(2))
    assert out.abs().max() <= 1.0 + 1e-6
    assert out.abs().max() > 0.9  # rescaled, not crushed


def test_inpaint_keeps_known_region():
    known = torch.full((1, 1, 4, 4), 0.5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    out = inpaint(lambda x, l: torch.full_like(x, -1.0), known, mask)(torch.zeros(1, 1, 4, 4), torch.zeros(1))
    assert (out[..., :2] == -1).all() and (out[..., 2:] == 0.5).all()


def test_every_sampler_list_names_the_core_samplers():
    """The CLI, the runtime's request schema, the add-on (no torch there) and the eval restate the sampler names;
    they must list exactly the ones `get_sampler` knows."""
    import typing

    from imagen_addon import cli
    from imagen_addon.blender import logic
    from imagen_addon.core.samplers import SAMPLERS, get_sampler
    from imagen_addon.eval.evaluate import SAMPLER_NAMES
    from imagen_addon.runtime.schemas import Sampler

    for name in SAMPLERS:
        assert callable(get_sampler(name))
    parser = cli.build_parser()
    for name in SAMPLERS:
        assert parser.parse_args(["generate", "a red cube", "--sampler", name]).sampler == name
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "a red cube", "--sampler", "euler"])
    assert typing.get_args(Sampler) == SAMPLERS
    assert sorted(s[0] for s in logic.SAMPLERS) == sorted(SAMPLERS)  # the add-on's menu order is its own
    assert tuple(SAMPLER_NAMES) == SAMPLERS
