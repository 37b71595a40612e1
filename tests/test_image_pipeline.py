"""One image pipeline: training, inference and evaluation see the same pixels for the same image,
and export writes the training crop into the model's config.json (image_processor.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tokenizer, write_tiny_prior
from vqct_tokenizer import VQCTConfig, VQCTTokenizer
from vqct_tokenizer.evaluation.evaluate import iter_batches
from vqct_tokenizer.image_processor import TRAINING_CROPS, ImageProcessor, resize_mode_for_crop
from vqct_tokenizer.training.data import CROPS, ImageDataset
from vqct_tokenizer.training.export import training_preprocessing

R = 32  # the tiny tokenizer's resolution
DETERMINISTIC_CROPS = {"resize": "resize", "center": "center_crop", "pad": "pad"}  # one per resize mode
SIZES = {"square": (48, 48), "wide": (40, 75), "tall": (90, 37), "small": (20, 13)}


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour ramps plus noise: resampling differences show, unlike in flat images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([255 * yy / h, 255 * xx / w, 128 + 100 * np.sin(xx / 5.0 + yy / 7.0)], axis=-1)
    return np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


def _save(folder: Path, name: str, h: int, w: int, kind: str = "png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(_photo(h, w))
    if kind == "rgba":  # half-transparent: training must composite over white as inference does
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))))
        kind = "png"
    path = folder / f"{name}.{'jpg' if kind == 'jpeg' else kind}"
    img.save(path, **({"quality": 90} if kind == "jpeg" else {}))
    return path


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("crop", sorted(DETERMINISTIC_CROPS))
def test_training_sample_equals_the_tokenizer_preprocessing(crop, size, tmp_path):
    h, w = SIZES[size]
    files = [_save(tmp_path / "img", f"{kind}", h, w, kind) for kind in ("png", "jpeg", "rgba")]
    data = ImageDataset(tmp_path / "img", R, crop=crop, flip=False)
    tok = make_tokenizer(resize_mode=resize_mode_for_crop(crop))
    assert tok.config.resize_mode == DETERMINISTIC_CROPS[crop]
    for i, path in enumerate(sorted(files)):
        assert data.files[i] == path
        sample = data[(i, 12345)]
        inference = tok.preprocess(str(path))[0][0]
        assert sample.shape == (3, R, R) and torch.equal(sample, inference), (crop, size, path.name)
        pil = Image.open(path)
        pil.load()
        assert torch.equal(tok.preprocess(pil)[0][0], sample)  # a PIL image: the same pixels again


def test_evaluation_batches_are_the_tokenizer_preprocessing(tmp_path):
    paths = [_save(tmp_path, name, h, w, "jpeg") for name, (h, w) in SIZES.items()]
    for mode in ("center_crop", "resize", "pad"):
        tok = make_tokenizer(resize_mode=mode)
        unreadable: list[str] = []
        [batch] = iter_batches(paths, ImageProcessor.from_config(tok.config), 8, unreadable)
        expected = torch.stack(tok.preprocess([str(p) for p in paths])[0])
        assert not unreadable and torch.equal(batch * 2.0 - 1.0, expected), mode


def test_random_crop_is_a_window_of_the_center_crop_resize(tmp_path):
    _save(tmp_path, "wide", 40, 75)
    data = ImageDataset(tmp_path, R, crop="random", flip=False)
    proc = ImageProcessor(R, "center_crop")
    img = proc.load(data.files[0])
    scaled = proc.normalize(proc.resample_to(img, *proc.scaled_size(40, 75)))  # (3, 32, 60)
    offsets = set()
    for seed in range(20):
        x = data[(0, seed)]
        hits = [left for left in range(scaled.shape[2] - R + 1) if torch.equal(x, scaled[:, :, left:left + R])]
        assert len(hits) == 1, seed
        offsets.add(hits[0])
    assert len(offsets) > 3  # the window moves
    centre = make_tokenizer(resize_mode="center_crop").preprocess(str(data.files[0]))[0][0]
    assert torch.equal(centre, scaled[:, :, (60 - R) // 2:(60 - R) // 2 + R])


@pytest.mark.parametrize("crop", ["random", "random_resized"])
def test_random_crops_of_a_square_image_at_full_scale_are_the_center_crop(crop, tmp_path):
    _save(tmp_path, "sq", 48, 48, "jpeg")
    data = ImageDataset(tmp_path, R, crop=crop, flip=False, scale=(1.0, 1.0))
    expected = make_tokenizer(resize_mode=resize_mode_for_crop(crop)).preprocess(str(data.files[0]))[0][0]
    assert all(torch.equal(data[(0, seed)], expected) for seed in range(5))


def test_flip_mirrors_the_same_pixels(tmp_path):
    _save(tmp_path, "wide", 40, 75)
    data = ImageDataset(tmp_path, R, crop="center", flip=True)
    expected = make_tokenizer().preprocess(str(data.files[0]))[0][0]
    samples = [data[(0, seed)] for seed in range(16)]
    assert all(torch.equal(s, expected) or torch.equal(s, expected.flip(-1)) for s in samples)
    assert any(not torch.equal(s, expected) for s in samples) and any(torch.equal(s, expected) for s in samples)


def test_every_training_crop_maps_to_a_resize_mode():
    assert set(TRAINING_CROPS) == set(CROPS)  # every crop training accepts
    for crop, mode in TRAINING_CROPS.items():
        assert training_preprocessing({"data": {"crop": crop}}) == {"resize_mode": mode, "resample": "bicubic"}
    assert training_preprocessing({})["resize_mode"] == "resize"  # an old checkpoint: data.crop's default
    with pytest.raises(ValueError, match="data.crop must be one of"):
        resize_mode_for_crop("stretch")


def test_a_config_without_preprocessing_fields_loads_as_center_crop(model_dir, tmp_path):
    """Exported configs older than these fields (or written by hand) keep today's inference behaviour."""
    data = json.loads((model_dir / "config.json").read_text())
    for key in ("resize_mode", "resample"):
        data.pop(key)
    config = VQCTConfig.from_dict(data)
    assert (config.resize_mode, config.resample) == ("center_crop", "bicubic")
    assert ImageProcessor.from_config(config) == ImageProcessor(R, "center_crop", "bicubic", 4)


def test_export_writes_the_training_crop_into_config_json(tmp_path):
    from test_training import tiny_cfg
    from vqct_tokenizer.training.export import export
    from vqct_tokenizer.training.trainer import train

    write_tiny_prior(tmp_path / "prior", edges=[(f"a{i}", f"n{i}", 1 + i) for i in range(6)])
    images = tmp_path / "images"
    for i in range(4):
        _save(images, f"{i:02d}", 24, 40, "jpeg")
    train(tiny_cfg(tmp_path / "run", tmp_path / "prior", images, "data.crop=pad", "optim.steps=1",
                   "run.ckpt_every=1"))
    out = export(tmp_path / "run", tmp_path / "exported")
    saved = json.loads((out / "config.json").read_text())
    assert (saved["resize_mode"], saved["resample"]) == ("pad", "bicubic")
    assert saved["extra"]["provenance"]["data_crop"] == "pad"
    tok = VQCTTokenizer.from_pretrained(out)
    data = ImageDataset(images, tok.config.resolution, crop="pad", flip=False)
    assert torch.equal(tok.preprocess(str(data.files[0]))[0][0], data[(0, 0)])  # non-square: training's pixels
