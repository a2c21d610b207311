"""Attribute combinations held out of the bundled model's training data, for `imagen eval`.

Every single attribute value is seen in training; only some *combinations* are not: a landscape's
(sky, ground, object colour, object shape) and a material's (pattern, colours). A combination is held out when a
stable hash of it falls in one bucket of seven (~14 %), so training data and evaluation agree without a list.
"""

from __future__ import annotations

import hashlib

HOLD_OUT_BUCKETS = 7


def combination_key(attrs: dict) -> tuple:
    if attrs.get("kind") == "material":
        return ("material", attrs["pattern"], *attrs.get("colors", ()))
    obj = attrs.get("object") or {}
    return ("landscape", attrs["sky"], attrs["ground"], obj.get("color"), obj.get("shape"))


def is_held_out(attrs: dict) -> bool:
    """True for attribute combinations that the training set never shows."""
    digest = hashlib.sha1(repr(combination_key(attrs)).encode()).digest()
    return int.from_bytes(digest[:4], "little") % HOLD_OUT_BUCKETS == 0
