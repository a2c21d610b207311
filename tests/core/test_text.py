import pytest
import torch

from imagen_addon.core import text


def test_minilm_encodes_batched_with_mask():
    enc = text.load_text_encoder("minilm")
    tokens, mask = enc.encode(["a red ball", "a seamless texture of blue and white diagonal stripes"])
    assert tokens.shape[0] == 2 and tokens.shape[2] == 384 and mask.shape == tokens.shape[:2]
    assert mask[0].sum() < mask[1].sum()
    assert (tokens[0, ~mask[0]] == 0).all()
    alone, _ = enc.encode("a red ball")
    assert torch.allclose(alone[0], tokens[0, :alone.shape[1]], atol=1e-5)
    assert enc.identity == {"name": "minilm", "hash": text.MINILM_SHA256[:16], "dim": 384, "max_length": 64}
    assert not any(p.requires_grad for p in enc.model.parameters()) and not enc.model.training


def test_lru_cache_bounded():
    enc = text.load_text_encoder("minilm")
    enc.encode([f"prompt {i}" for i in range(300)])
    assert len(enc._cache) <= 300
    enc.encode("one more")
    assert len(enc._cache) <= max(enc._cache_size, 1) and "one more" in enc._cache


def test_max_length_truncates():
    enc = text.TextEncoder("minilm", max_length=8)
    tokens, mask = enc.encode(["word " * 50])
    assert tokens.shape[1] == 8


def test_weights_hash_is_checked(monkeypatch):
    monkeypatch.setattr(text, "MINILM_SHA256", "0" * 64)
    with pytest.raises(text.TextEncoderError, match="sha256"):
        text.minilm_folder()


def test_missing_t5_says_how_to_provide_it(tmp_path):
    with pytest.raises(text.TextEncoderError, match="nothing is downloaded"):
        text.TextEncoder("t5:google/t5-v1_1-nonexistent-test")
    with pytest.raises(text.TextEncoderError, match="unknown text encoder"):
        text.TextEncoder("clip")
