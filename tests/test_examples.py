"""The example scripts run, on the tiny temp model, and produce what they promise."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from vqct_tokenizer import VQCTTokenizer

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_IMAGES = sorted((REPO / "examples" / "images").glob("*.jpg"))


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_images_are_shipped():
    assert len(EXAMPLE_IMAGES) >= 3


def test_tokenize_folder(model_dir, tmp_path):
    from vqct_tokenizer.tokens import read_token_file

    out = tmp_path / "tokens.pt"
    load_example("tokenize_folder").main([str(REPO / "examples" / "images"), "-o", str(out), "--model", str(model_dir)])
    stored = read_token_file(out)
    assert [Path(p).name for p in stored.image_paths] == sorted(p.name for p in EXAMPLE_IMAGES)
    tok = VQCTTokenizer.from_pretrained(model_dir)
    assert stored.layout == tok.config.token_layout(tuple(stored.grids[0].shape[:2]))
    first = sorted(EXAMPLE_IMAGES)[0]
    np.testing.assert_array_equal(stored.grids[0].numpy(), tok.encode(str(first)).numpy())


def test_draw_words(model_dir, tmp_path):
    out = tmp_path / "words.png"
    load_example("draw_words").main([str(EXAMPLE_IMAGES[0]), "-o", str(out), "--model", str(model_dir), "--cell-px", "40"])
    tok = VQCTTokenizer.from_pretrained(model_dir)
    h, w, _ = tok.encode(str(EXAMPLE_IMAGES[0])).shape
    assert Image.open(out).size == (w * 40, h * 40)


def test_batch_round_trip(model_dir):
    scores = load_example("batch_round_trip").main([*map(str, EXAMPLE_IMAGES[:2]), "--model", str(model_dir)])
    assert math.isfinite(scores["psnr"]) and 0 < scores["psnr"] < 60
    assert -1 <= scores["ssim"] <= 1
