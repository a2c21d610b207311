"""The attribute judge on real procedural images, its refusals, seam ratios and the Fréchet distance."""

from __future__ import annotations

import numpy as np
import pytest

from imagen_addon.data import worlds
from imagen_addon.data.heldout import is_held_out
from imagen_addon.eval import judge as J
from imagen_addon.eval.classifier import frechet_distance, load_nets
from imagen_addon.eval.evaluate import accuracy, heldout_records, reference_images


@pytest.fixture(scope="module")
def nets():
    return load_nets()


def landscape(sky="day", ground="grass", obj=None, **extra) -> dict:
    attrs = {"kind": "landscape", "sky": sky, "ground": ground, "sun": False, "moon": False, "mountains": False,
             "clouds": False, "object": obj}
    attrs.update(extra)
    return attrs


def test_judge_is_near_perfect_on_procedural_images_of_held_out_combinations(nets):
    land, mats = heldout_records("landscape", 24, seed=5), heldout_records("material", 16, seed=5)
    records = [a for a, _ in land + mats]
    assert all(is_held_out(a) for a in records)
    verdicts, feats = J.judge_batch(reference_images(records, 128, seed=5), records, nets)
    assert feats.shape == (40, 64)
    pooled = [v for verdict in verdicts for v in verdict.values()]
    assert len(pooled) > 150 and np.mean(pooled) >= 0.98
    acc = accuracy(verdicts)
    assert {"sky", "ground", "object_color", "object_position", "object_shape", "colors", "pattern",
            "seamless"} <= set(acc)
    assert min(acc.values()) >= 0.85


def test_judge_rejects_the_wrong_attributes(nets):
    truth = landscape("day", "sand", {"shape": "ball", "color": "red", "position": "left"}, sun=True)
    image = worlds.render(truth, 128, np.random.default_rng(3))
    assert all(J.judge(image, truth, nets).values())
    assert J.judge(image, dict(truth, sky="night", sun=False), nets) == {
        "sky": False, "ground": True, "object_color": True, "object_position": True, "object_shape": True}
    assert not J.judge(image, dict(truth, ground="snow"), nets)["ground"]
    wrong = J.judge(image, dict(truth, object={"shape": "tree", "color": "blue", "position": "right"}), nets)
    assert not (wrong["object_color"] or wrong["object_position"] or wrong["object_shape"])
    plain = worlds.render(landscape("day", "sand"), 128, np.random.default_rng(3))
    verdict = J.judge(plain, truth, nets)
    assert verdict["sky"] and verdict["ground"] and not verdict["sun"] and not verdict["object_color"]

    stripes = {"kind": "material", "pattern": "stripes", "colors": ["blue", "white"], "orientation": "vertical"}
    image = worlds.render(stripes, 128, np.random.default_rng(4))
    assert all(J.judge(image, stripes, nets).values())
    assert J.judge(image, dict(stripes, orientation="horizontal"), nets)["orientation"] is False
    assert J.judge(image, dict(stripes, colors=["red", "white"]), nets)["colors"] is False
    assert J.judge(image, {"kind": "material", "pattern": "dots", "colors": ["blue", "white"]}, nets)["pattern"] \
        is False


def test_hidden_objects_are_recognised_and_skipped():
    assert not J.object_visible(landscape("day", "snow", {"shape": "cube", "color": "white", "position": "left"}))
    assert not J.object_visible(landscape("night", "snow", {"shape": "ball", "color": "gray", "position": "left"}))
    assert J.object_visible(landscape("day", "snow", {"shape": "cube", "color": "red", "position": "left"}))
    assert J.object_visible(landscape("day", "snow"))


def test_seam_ratio_is_low_for_seamless_textures_and_high_for_a_cut():
    rng = np.random.default_rng(0)
    for pattern in ("stone", "marble", "checkerboard", "stripes"):
        attrs = {"kind": "material", "pattern": pattern, "colors": ["red", "yellow"][: 1 if pattern in
                                                                                     ("stone", "marble") else 2]}
        if pattern == "stripes":
            attrs["orientation"] = "diagonal"
        image = worlds.render(attrs, 128, rng)
        assert J.seam_ratio(image, 1) <= 1.5 and J.seam_ratio(image, 0) <= 1.5
        cut = image[:, :100]  # no longer a whole number of periods
        assert J.seam_ratio(cut, 1) > 2.0
    noise = worlds.render({"kind": "material", "pattern": "marble", "colors": ["gray"]}, 128, rng)
    assert 0.5 <= J.seam_ratio(noise, 1) <= 1.5  # a seamless noise texture: about one
    ramp = np.repeat(np.linspace(0, 255, 64)[None, :, None], 3, axis=2).repeat(16, axis=0)
    assert J.seam_ratio(ramp, 1) == pytest.approx(63, rel=0.05)


def test_same_phase_seam_ratio_compares_block_boundaries_only():
    """An image smooth inside 4-px blocks but with a step at every block boundary: the wrap pair is one more
    boundary, so at the same phase the ratio is 1, while against all neighbours it counts the step 4 times over."""
    blocks = np.repeat(np.array([0.0, 40.0] * 8), 4)  # 64 columns, a 40-level step at every 4th pair, wrapping
    image = np.repeat(np.repeat(blocks[None, :, None], 3, axis=2), 8, axis=0)
    assert J.seam_ratio(image, 1, period=4) == pytest.approx(1.0)
    assert J.seam_ratio(image, 1) == pytest.approx(4 * 63 / 60, rel=1e-6)  # 60 of 63 pairs: no step


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    b = rng.normal(size=(500, 8)) * 2 + 1
    # two Gaussians with covariances I and 4I and means 0 and 1: 8 * 1 + 8 * (1 + 4 - 2 * 2) = 16
    assert frechet_distance(a, b) == pytest.approx(16, rel=0.15)
    assert frechet_distance(a, a + 0.5) == pytest.approx(8 * 0.25, rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)
