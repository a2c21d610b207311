import os

import numpy as np
from PIL import Image

from imagen_addon.data import folder


def write(root, name, colour, text):
    Image.fromarray(np.full((16, 16, 3), colour, np.uint8)).save(root / name)
    with open(root / "metadata.jsonl", "a") as f:
        f.write(f'{{"file_name": "{name}", "text": "{text}"}}\n')


def test_decoded_cache_follows_images_rewritten_in_place(tmp_path):
    write(tmp_path, "a.png", (200, 40, 40), "red")
    write(tmp_path, "b.png", (45, 85, 200), "blue")
    [first] = folder.load_buckets(tmp_path, 8, progress=False)
    assert first.images[0, 0, 0].tolist() == [200, 40, 40]
    assert [b.images[0, 0, 0].tolist() for b in folder.load_buckets(tmp_path, 8, progress=False)] == [[200, 40, 40]]
    # same names and captions, new pixels (a regenerated dataset): the cache must not serve the old decode
    Image.fromarray(np.full((16, 16, 3), (55, 150, 60), np.uint8)).save(tmp_path / "a.png")
    st = os.stat(tmp_path / "a.png")
    os.utime(tmp_path / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    [again] = folder.load_buckets(tmp_path, 8, progress=False)
    assert again.images[0, 0, 0].tolist() == [55, 150, 60]
    assert again.captions == ["red", "blue"]
