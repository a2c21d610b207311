"""Image-caption folders in the common convention (Hugging Face `imagefolder`):

    DATA/metadata.jsonl   {"file_name": "0001.png", "text": "a red ball ...", "attributes": {...}} per line
    DATA/0001.png ...

or images with same-name `.txt` captions (DATA/0001.png + DATA/0001.txt). Unreadable or truncated images,
empty captions and non-image files are skipped and counted in one warning, never a crash.

For training, images are decoded once into uint8 arrays per *bucket* (same shape and padding mode: square
images, 2:1 panoramas that wrap on x, seamless materials that wrap on x and y) and cached beside the data.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
CACHE_DIR = ".imagen_cache"


@dataclass(frozen=True)
class Record:
    path: Path
    text: str
    attributes: dict

    @property
    def tiling(self) -> str:
        """The padding a record is trained with: seamless materials wrap on x and y, panoramas on x."""
        if self.attributes.get("kind") == "material":
            return "xy"
        return "x" if self.attributes.get("panorama") else "none"


def scan_folder(root: str | Path) -> tuple[list[Record], Counter]:
    """All (image, caption) records of a folder, and a Counter of what was skipped and why."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    skipped: Counter = Counter()
    records = []
    meta = root / "metadata.jsonl"
    if meta.is_file():
        for n, line in enumerate(meta.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                name, text = row["file_name"], str(row.get("text", "")).strip()
            except (ValueError, KeyError, TypeError):
                skipped["bad metadata line"] += 1
                continue
            path = root / name
            if not text:
                skipped["empty caption"] += 1
            elif path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                skipped["missing or non-image file"] += 1
            else:
                records.append(Record(path, text, row.get("attributes") or {}))
    else:
        for path in sorted(root.iterdir()):
            if path.suffix.lower() == ".txt" or path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped["non-image file"] += 1
                continue
            caption = path.with_suffix(".txt")
            text = caption.read_text(encoding="utf-8", errors="replace").strip() if caption.is_file() else ""
            if not text:
                skipped["empty or missing caption"] += 1
                continue
            records.append(Record(path, text, {}))
    return records, skipped


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """RGB uint8 [H, W, 3] resized (shorter side) and centre-cropped to (W, H); None if unreadable."""
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGB")
    except Exception:  # noqa: BLE001 - truncated, corrupt, unsupported: all are "skip this file"
        return None
    w, h = size
    scale = max(w / im.width, h / im.height)
    rw, rh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
    if (rw, rh) != im.size:
        im = im.resize((rw, rh), resample=Image.BICUBIC)
    left, top = (rw - w) // 2, (rh - h) // 2
    return np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.uint8)


@dataclass
class Bucket:
    """Images of one shape and padding mode, decoded into memory."""
    tiling: str
    images: np.ndarray          # uint8 [N, H, W, 3]
    captions: list[str]


def bucket_shape(record: Record, size: int) -> tuple[int, int]:
    return (2 * size, size) if record.tiling == "x" else (size, size)


def load_buckets(root: str | Path, size: int, progress: bool = True) -> list[Bucket]:
    """Decode a folder at `size` (panoramas at 2*size x size) into buckets, cached as .npy beside the data."""
    from tqdm import tqdm  # noqa: PLC0415

    root = Path(root)
    records, skipped = scan_folder(root)
    key = hashlib.sha256(json.dumps([size] + [(str(r.path.name), r.text, r.tiling) for r in records])
                         .encode()).hexdigest()[:16]
    cache = root / CACHE_DIR / f"images-{size}-{key}"
    if (cache / "index.json").is_file():
        index = json.loads((cache / "index.json").read_text())
        return [Bucket(b["tiling"], np.load(cache / f"{b['tiling']}.npy"), b["captions"]) for b in index]
    groups: dict[str, tuple[list, list]] = {}
    for record in tqdm(records, desc=f"decoding {root.name} at {size}px", disable=not progress, unit="img"):
        arr = load_image(record.path, bucket_shape(record, size))
        if arr is None:
            skipped["unreadable image"] += 1
            continue
        images, captions = groups.setdefault(record.tiling, ([], []))
        images.append(arr)
        captions.append(record.text)
    if skipped:
        warnings.warn(f"{root}: skipped {sum(skipped.values())} item(s): "
                      + ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())), stacklevel=2)
    if not groups:
        raise ValueError(f"{root} holds no usable image-caption pairs")
    buckets = [Bucket(t, np.stack(im), caps) for t, (im, caps) in sorted(groups.items())]
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for b in buckets:
            np.save(cache / f"{b.tiling}.npy", b.images)
        tmp = cache / "index.json.tmp"
        tmp.write_text(json.dumps([{"tiling": b.tiling, "captions": b.captions} for b in buckets]))
        tmp.replace(cache / "index.json")
    except OSError as e:  # a read-only dataset still trains, just without the cache
        warnings.warn(f"could not cache decoded images in {cache}: {e}", stacklevel=2)
    return buckets
