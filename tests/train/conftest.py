import json

import pytest
from PIL import Image

RED, BLUE = (200, 40, 40), (45, 85, 200)


@pytest.fixture(scope="session")
def flat_colours(tmp_path_factory):
    """Two captions, two flat colours: the smallest dataset a text-to-image model can learn."""
    root = tmp_path_factory.mktemp("flat")
    rows = []
    for i in range(16):
        colour, text = (RED, "a red image") if i % 2 else (BLUE, "a blue image")
        Image.new("RGB", (32, 32), colour).save(root / f"{i:03d}.png")
        rows.append({"file_name": f"{i:03d}.png", "text": text})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _tiny_train_config(data, run_dir, **kw):
    from imagen_addon.core.imagen import Imagen, tiny_config
    from imagen_addon.train.config import load_config
    from imagen_addon.train.trainer import _config_dict

    opts = dict(data=str(data), run_dir=str(run_dir), model=_config_dict(Imagen(tiny_config())), steps=[20],
                batch_size=8, lr=2e-3, warmup_steps=5, sample_every_steps=0, checkpoint_every_steps=10,
                log_every_steps=5, sr_crop=16, threads=1)
    opts.update(kw)
    return load_config(None, **opts)


@pytest.fixture
def tiny_train_config():
    """A factory: tiny_train_config(data, run_dir, **overrides) -> TrainConfig for the tiny cascade."""
    return _tiny_train_config
