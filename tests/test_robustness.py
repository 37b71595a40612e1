"""Faults and hostile input: kill -9 during training, then images, token files, configs, weights and
priors that are broken or malicious. Each must be a clear error (one line from the CLI) or a logged
skip (encode-dataset), never a crash or a hang.

The tokenizer API is already tested against most bad inputs in test_tokenizer.py (unreadable files,
NaN/inf and out-of-range tensors, bad configs, weights and pickles) and ``vqct decode`` against bad
token files in test_cli.py; here they go through the paths those do not cover: encode-dataset, its
reader, the other CLI commands, and training.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file, save_file

from vqct_tokenizer import load_token_dataset
from vqct_tokenizer.cli import main
from vqct_tokenizer.dataset import encode_dataset
from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.fast_decode import FastDecoders
from vqct_tokenizer.errors import CellLimitError, ImageError, NotEnoughMemoryError, PixelLimitError, TokenError
from vqct_tokenizer.tokenizer import DEFAULT_MAX_NATIVE_PIXELS
from vqct_tokenizer.training.checkpoint import list_checkpoints, load_checkpoint

# the tiny model and its fixtures are shared with the dataset tests
from test_dataset import CHILD_ENV, model, tok  # noqa: F401


def vqct(*args) -> int:
    return main([str(a) for a in args])


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"vqct {command}: error:") and "Traceback" not in err, err
    return err


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds no pixel data: how a bomb or a lie looks to PIL."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def random_image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------- kill -9 during training
@pytest.fixture(scope="module")
def train_config(tmp_path_factory) -> Path:
    """A tiny training run (8 images, 16 px, no perceptual loss) that checkpoints every step."""
    from conftest import write_tiny_prior

    root = tmp_path_factory.mktemp("train")
    write_tiny_prior(root / "prior", edges=[(f"a{i}", f"n{i}", 2) for i in range(6)], counts=(5, 5))
    (root / "data").mkdir()
    for i in range(8):
        random_image(20, 20, seed=i).save(root / "data" / f"{i}.png")
    cfg = {
        "model": {"resolution": 16, "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                  "z_channels": 8, "codebook_dim": 4, "norm_groups": 4},
        "codebook": {"prior": str(root / "prior")},
        "loss": {"perceptual": "none", "disc_start": 2, "disc_channels": 8, "disc_layers": 2},
        "data": {"train": str(root / "data"), "workers": 0},
        "optim": {"batch_size": 4, "steps": 100000},
        "run": {"out_dir": str(root / "run"), "ckpt_every": 1, "keep": 3, "log_every": 1, "image_every": 0,
                "threads": 1},
    }
    (root / "cfg.json").write_text(json.dumps(cfg))
    return root / "cfg.json"


def test_kill_9_during_training_then_resume(train_config, capsys):
    out = train_config.parent / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vqct_tokenizer", "train", "--config", str(train_config)],
                            env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while len(list_checkpoints(out)) < 3:  # keep=3: rotation has started, saves and deletes overlap
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no 3 checkpoints within 90 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # every complete checkpoint loads: none is torn (temp files of a killed save do not count)
    ckpts = list_checkpoints(out)
    steps = [load_checkpoint(p)["step"] for p in ckpts]
    assert steps == sorted(steps) and steps[-1] >= 3
    # what a kill in the middle of a save and of a metrics line leaves behind
    (out / ".ckpt_99999999.pt.x.tmp").write_bytes(b"torn")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 99999999, "lo')
    assert vqct("train", "--config", train_config, "--resume", "--max-steps", 2) == 0
    assert f"resumed {ckpts[-1]} at step {steps[-1]}" in capsys.readouterr().out
    assert load_checkpoint(out)["step"] == steps[-1] + 2
    assert not list(out.glob(".ckpt_*.tmp"))
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == steps[-1] + 2


def test_training_refuses_a_prior_whose_edges_name_unknown_words(train_config, tmp_path, capsys):
    prior = tmp_path / "prior"
    shutil.copytree(train_config.parent / "prior", prior)
    doc = json.loads((prior / "prior.json").read_text())
    doc["edges"].append(["a0", "unicorn", 3])
    (prior / "prior.json").write_text(json.dumps(doc))
    assert vqct("train", "--config", train_config, f"codebook.prior={prior}", f"run.out_dir={tmp_path / 'run'}",
                "--max-steps", 1) == 2
    assert "unknown noun 'unicorn'" in one_line_error(capsys, "train")
    assert not list((tmp_path / "run").glob("ckpt_*"))


# ---------------------------------------------------------------------------------------- hostile image files
def hostile_files(folder: Path) -> dict[str, Path]:
    """Files that must each be listed as failed with a reason: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "bomb": folder / "bomb.png",            # 100000 x 100000 declared: PIL's decompression-bomb limit
        "zero": folder / "zero.png",            # declares a 0-pixel-wide image
        "truncated": folder / "truncated.jpg",
        "text": folder / "text.png",            # not an image, renamed .png
        "empty": folder / "empty.png",
        "nan": folder / "nan.tiff",             # a float image holding NaN
    }
    files["bomb"].write_bytes(png_header(100_000, 100_000))
    files["zero"].write_bytes(png_header(0, 16))
    random_image(64, 64).save(folder / "full.jpg", quality=90)
    data = (folder / "full.jpg").read_bytes()
    (folder / "full.jpg").unlink()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"].write_text("definitely not an image\n")
    files["empty"].write_bytes(b"")
    values = np.full((8, 8), 0.5, dtype=np.float32)
    values[3, 4] = np.nan
    Image.fromarray(values, mode="F").save(files["nan"])
    return files


REASONS = {
    "bomb": "too large to decode safely",
    "zero": "not a readable image",
    "truncated": "truncated",
    "text": "not a readable image",
    "empty": "not a readable image",
    "nan": "NaN or inf",
}


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_hostile_file_through_the_api_and_vqct_encode(kind, tok, model, tmp_path, capsys):
    path = hostile_files(tmp_path)[kind]
    with pytest.raises(ImageError, match=REASONS[kind]):
        tok.encode(path)
    assert vqct("encode", path, "-o", tmp_path / "t.pt", "--model", model) == 2
    err = one_line_error(capsys, "encode")
    assert REASONS[kind] in err and path.name in err
    assert "PIL" not in err  # a CLI user is told about --max-pixels, never a Python global
    assert not (tmp_path / "t.pt").exists()


def test_encode_dataset_lists_every_hostile_file_and_encodes_the_rest(tok, model, tmp_path, capsys):
    files = hostile_files(tmp_path / "in")
    random_image(1, 1).save(tmp_path / "in" / "one_pixel.png")
    random_image(30, 20).save(tmp_path / "in" / "normal.png")
    out = tmp_path / "out"
    assert vqct("encode-dataset", tmp_path / "in", "-o", out, "--model", model, "--shard-size", "3",
                "--workers", "1", "--no-progress") == 0
    printed = capsys.readouterr().out
    ds = load_token_dataset(out)
    assert ds.paths == ["normal.png", "one_pixel.png"]
    reasons = {f["path"]: f["error"] for f in ds.failures}
    assert reasons.keys() == {p.name for p in files.values()}
    for kind, path in files.items():
        assert REASONS[kind] in reasons[path.name], (kind, reasons[path.name])
        assert f"skipped {path.name}" in printed
    assert torch.equal(ds["one_pixel.png"], tok.encode(tmp_path / "in" / "one_pixel.png"))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [40, 64], ids=["over-limit", "over-twice-limit"])
def test_decompression_bomb_limit_is_a_clear_error(side, tok, tmp_path, monkeypatch):
    """PIL raises only above twice MAX_IMAGE_PIXELS (warning between); both must be an ImageError."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "big.png"
    random_image(side, side).save(path)
    with pytest.raises(ImageError, match="big.png: image is too large.*MAX_IMAGE_PIXELS"):
        tok.encode(path)
    encode_dataset(tmp_path, tmp_path / "out", tok, workers=0, progress=False)
    assert "too large" in load_token_dataset(tmp_path / "out").failures[0]["error"]


@pytest.mark.parametrize("native", [False, True])
def test_one_pixel_image_round_trips(native, tok):
    image = random_image(1, 1)
    tokens, size = tok.encode(image, resize=not native, return_image_sizes=True)
    assert tuple(tokens.shape) == ((1, 1, 3) if native else (8, 8, 3)) and size == (1, 1)
    out = tok.decode(tokens, image_size=size if native else None)
    assert out.size == ((1, 1) if native else (16, 16))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_image_file_with_nan_or_inf(bad, tok, tmp_path):
    values = np.full((8, 8), 0.25, dtype=np.float32)
    values[0, 0] = bad
    Image.fromarray(values, mode="F").save(tmp_path / "f.tiff")
    with pytest.raises(ImageError, match="NaN or inf"):
        tok.encode(tmp_path / "f.tiff")


# ---------------------------------------------------------------------------------------- token files
@pytest.fixture(scope="module")
def token_dataset(tok, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tokdata")
    for i in range(4):
        random_image(18, 18, seed=i).save(folder / f"{i}.png")
    out = folder / "out"
    encode_dataset(folder, out, tok, shard_size=2, workers=0, progress=False)
    return out


class _Booby:
    """Unpickling this creates a marker file: proof that a loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tamper(shard: Path, kind: str, marker: Path) -> None:
    tokens = load_file(str(shard))["tokens"]
    if kind == "float":
        save_file({"tokens": tokens.astype(np.float32)}, str(shard))
    elif kind == "rank":
        save_file({"tokens": tokens[0]}, str(shard))
    elif kind == "shape":
        save_file({"tokens": tokens[:, :4]}, str(shard))
    elif kind == "range-adjective":
        tokens = tokens.copy()
        tokens[0, 0, 0, 0] = 6  # a noun id in an adjective slot
        save_file({"tokens": tokens}, str(shard))
    elif kind == "range-negative":
        tokens = tokens.copy()
        tokens[1, 2, 3, 2] = -1
        save_file({"tokens": tokens}, str(shard))
    elif kind == "keys":
        save_file({"tokens": tokens, "extra": tokens}, str(shard))
    elif kind == "garbage":
        shard.write_bytes(os.urandom(300))
    elif kind == "pickle":
        shard.write_bytes(pickle.dumps({"tokens": _Booby(marker)}))


@pytest.mark.parametrize("kind, message", [
    ("float", "must be integers"),
    ("rank", "must have shape"),
    ("shape", "must have shape"),
    ("range-adjective", "token id 6 out of range for adjective"),
    ("range-negative", "token id -1 out of range for noun"),
    ("keys", "holds tensors"),
    ("garbage", "not a readable safetensors"),
    ("pickle", "not a readable safetensors"),
])
def test_tampered_shard_is_a_clear_error_from_the_reader(kind, message, token_dataset, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(token_dataset, out)
    marker = tmp_path / "pwned"
    _tamper(out / "shard-00001.safetensors", kind, marker)
    ds = load_token_dataset(out)
    assert torch.equal(ds[0], load_token_dataset(token_dataset)[0])  # shard 0 is untouched
    with pytest.raises(TokenError, match=message):
        ds[2]
    with pytest.raises(TokenError, match="shard-00001"):
        ds.validate()
    assert not marker.exists()


def test_tampered_manifest_is_a_clear_error(token_dataset, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(token_dataset, out)
    (out / "shard-00001.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="shard-00001.safetensors"):
        load_token_dataset(out)
    (out / "manifest.json").write_text('{"format": "vqct-token-dataset", "layo')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_token_dataset(out)


def test_resume_into_a_folder_that_is_not_an_encode_dataset_output(tok, token_dataset, tmp_path):
    (tmp_path / "settings.json").write_text('{"something": "else"}')
    with pytest.raises(ValueError, match="not a vqct encode-dataset settings file"):
        encode_dataset(token_dataset.parent, tmp_path, tok, workers=0, progress=False)


# ---------------------------------------------------------------------------------------- broken models through the CLI
def _broken_model(model: Path, folder: Path, kind: str, marker: Path) -> Path:
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    weights = folder / "model.safetensors"
    if kind == "config-missing":
        config.pop("z_channels")
    elif kind == "config-absurd":
        config["resolution"] = 10 ** 9
    elif kind == "config-negative":
        config["num_nouns"] = -4
    elif kind == "config-not-json":
        (folder / "config.json").write_text("{resolution: 16")
        return folder
    elif kind in ("weights-missing", "weights-extra", "weights-shape"):
        from safetensors.torch import load_file as load_pt, save_file as save_pt

        state = load_pt(str(weights))
        if kind == "weights-missing":
            state.pop("model.decoder.conv_out.bias")
        elif kind == "weights-extra":
            state["model.surprise"] = torch.zeros(2)
        else:
            state["codebook"] = torch.zeros(3, 4)
        save_pt(state, str(weights))
    elif kind == "weights-pickle":
        weights.write_bytes(pickle.dumps({"codebook": _Booby(marker)}))
    elif kind == "weights-torch-save":
        torch.save({"codebook": _Booby(marker)}, weights)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind, message", [
    ("config-missing", "missing required fields ['z_channels']"),
    ("config-absurd", "resolution must be in"),
    ("config-negative", "num_nouns must be >= 1"),
    ("config-not-json", "not valid JSON"),
    ("weights-missing", "missing keys ['model.decoder.conv_out.bias']"),
    ("weights-extra", "unexpected keys ['model.surprise']"),
    ("weights-shape", "wrong shapes codebook"),
    ("weights-pickle", "pickled checkpoints are never loaded"),
    ("weights-torch-save", "pickled checkpoints are never loaded"),
])
@pytest.mark.parametrize("command", ["encode-dataset", "describe"])
def test_broken_model_is_a_one_line_error(command, kind, message, model, token_dataset, tmp_path, capsys):
    marker = tmp_path / "pwned"
    broken = _broken_model(model, tmp_path / "model", kind, marker)
    image = token_dataset.parent / "0.png"
    if command == "encode-dataset":
        args = ["encode-dataset", token_dataset.parent, "-o", tmp_path / "out", "--workers", "0"]
    else:
        args = ["describe", image]
    assert vqct(*args, "--model", broken) == 2
    assert message in one_line_error(capsys, command)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------- bounded work: native encode
def test_native_encode_refuses_an_image_over_the_pixel_limit(tok):
    # f = 2: 40x40 is exactly 1600 pixels; 40x41 is padded to 40x42 = 1680, and padding counts
    assert tuple(tok.encode(random_image(40, 40), resize=False, max_native_pixels=1600).shape) == (20, 20, 3)
    with pytest.raises(PixelLimitError, match=r"image 0: 41x40 image \(42x40 after padding to a multiple of 2, "
                                              r"1,680 pixels\) is over the native-size limit of 1,600 pixels.*"
                                              r"max_native_pixels=N"):
        tok.encode(random_image(40, 41), resize=False, max_native_pixels=1600)
    # resize=True is not limited by it: the encoder sees config.resolution pixels
    assert tuple(tok.encode(random_image(40, 41), max_native_pixels=1600).shape) == (8, 8, 3)


def test_native_encode_default_limit(tok):
    assert tok.max_native_pixels == DEFAULT_MAX_NATIVE_PIXELS
    height = 4096
    width = DEFAULT_MAX_NATIVE_PIXELS // height + 2  # f = 2: already a multiple
    # refused from its shape, before the array is converted to float or any encoder work: this test is fast
    wide = np.zeros((height, width, 3), dtype=np.uint8)
    with pytest.raises(PixelLimitError, match=f"{height * width:,} pixels.*limit of {DEFAULT_MAX_NATIVE_PIXELS:,} pixels; "
                                              r"encoding and decoding it takes about \d+\.\d GiB of memory"):
        tok.encode(wide, resize=False)
    assert tok.native_memory_bytes(4000, 6000) > tok.native_memory_bytes(2000, 3000) > 0
    small = VQCTTokenizer(tok.config)
    small.max_native_pixels = 100  # the attribute, per tokenizer
    with pytest.raises(PixelLimitError, match="limit of 100 pixels"):
        small.encode(random_image(12, 12), resize=False)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_native_limit_names_the_file_and_lets_big_files_through_when_raised(tok, tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    random_image(40, 40).save(path)
    with pytest.raises(PixelLimitError, match="big.png: 40x40 image"):
        tok.encode(path, resize=False, max_native_pixels=1000)
    # a file above PIL's own limit: refused at --resize, read when the native limit is raised past it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(PixelLimitError, match="limit 1,000"):
        tok.encode(path)
    assert tuple(tok.encode(path, resize=False, max_native_pixels=2000).shape) == (20, 20, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # PIL's global is restored


def test_decode_refuses_a_grid_over_the_size_limit(tok):
    ids = torch.tensor([0, 1, 6])
    huge = ids.expand(1, 4000, 4000, 3)  # a view: no 384 MB of ids, and decode must not ask for 8000x8000
    with pytest.raises(CellLimitError, match=r"4000x4000 token grid would decode to a 8000x8000 image \(64,000,000 "
                                             rf"pixels\), over the native-size limit of {DEFAULT_MAX_NATIVE_PIXELS:,} "
                                             r"pixels.*max_native_pixels=N"):
        tok.decode(huge)
    grid = ids.expand(11, 10, 3)
    with pytest.raises(CellLimitError, match="over the native-size limit of 400 pixels"):
        tok.decode(grid, max_native_pixels=400)
    assert tok.decode(grid, max_native_pixels=440).size == (20, 22)
    # the older bound in cells still works, and wins when given
    with pytest.raises(CellLimitError, match="the limit is 100 cells.*max_cells=N"):
        tok.decode(grid, max_cells=100, max_native_pixels=10**6)
    assert tok.decode(grid, max_cells=110).size == (20, 22)
    small = VQCTTokenizer(tok.config)
    small.max_native_pixels = 400  # the attribute governs decode as it governs encode
    assert small.decode(ids.expand(10, 10, 3)).size == (20, 20)
    with pytest.raises(CellLimitError, match="limit of 400 pixels"):
        small.decode(ids.expand(10, 11, 3))
    assert small.reconstruct(random_image(30, 30), resize=False, max_native_pixels=900).size == (30, 30)


def test_one_limit_raising_max_native_pixels_alone_lets_decode_of_the_same_grid_succeed(tok):
    image = random_image(40, 50)  # f = 2: 2,000 pixels
    small = VQCTTokenizer(tok.config)
    small.load_state_dict(tok.state_dict())
    small.max_native_pixels = 1000
    with pytest.raises(PixelLimitError):
        small.encode(image, resize=False)
    # the argument, passed to both calls
    tokens = small.encode(image, resize=False, max_native_pixels=2000)
    with pytest.raises(CellLimitError, match="limit of 1,000 pixels.*max_native_pixels=N"):
        small.decode(tokens)
    assert small.decode(tokens, max_native_pixels=2000).size == (50, 40)
    # or the attribute, once
    small.max_native_pixels = 2000
    assert torch.equal(small.encode(image, resize=False), tokens)
    assert small.decode(tokens).size == (50, 40)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_cli_native_flags_raise_the_limits_and_name_themselves(model, tmp_path, capsys):
    image = tmp_path / "img.png"
    random_image(39, 40).save(image)  # 40x39 = 1560 pixels, padded to 40x40 = 1600 (f = 2)
    out = tmp_path / "t.pt"
    out.write_bytes(b"earlier work")
    pil_limit = Image.MAX_IMAGE_PIXELS
    for command, extra in (("encode", ["-o", out]), ("describe", []), ("reconstruct", ["-o", tmp_path / "r.png"])):
        for max_pixels, message in ((1000, "40x39 = 1,560 pixels, limit 1,000"),  # --max-pixels limits reading too
                                    (1580, "40x39 image (40x40 after padding to a multiple of 2, 1,600 pixels) is "
                                           "over the native-size limit of 1,580 pixels")):
            assert vqct(command, image, *extra, "--native", "--max-pixels", max_pixels, "--model", model) == 2
            err = one_line_error(capsys, command)
            assert "img.png: " in err and message in err and "rerun with --max-pixels N" in err, err
            assert "max_native_pixels" not in err and "PIL" not in err
            assert Image.MAX_IMAGE_PIXELS == pil_limit  # restored after the command
    assert out.read_bytes() == b"earlier work" and not (tmp_path / "r.png").exists()
    assert vqct("encode", image, "-o", out, "--native", "--max-pixels", 1600, "--model", model) == 0
    assert vqct("reconstruct", image, "-o", tmp_path / "r.png", "--native", "--max-pixels", 1600, "--model", model) == 0
    assert Image.open(tmp_path / "r.png").size == (40, 39)


def test_cli_decode_max_cells(model, tmp_path, capsys):
    grid = np.broadcast_to(np.array([0, 1, 6]), (1, 12, 12, 3)).astype(np.int64)
    np.save(tmp_path / "t.npy", grid)
    target = tmp_path / "o.png"
    target.write_bytes(b"earlier image")
    assert vqct("decode", tmp_path / "t.npy", "-o", target, "--model", model, "--max-cells", 100) == 2
    err = one_line_error(capsys, "decode")
    assert "12x12 token grid (144 cells)" in err and "rerun with --max-cells N" in err and "max_cells=" not in err
    assert target.read_bytes() == b"earlier image"
    assert vqct("decode", tmp_path / "t.npy", "-o", target, "--model", model, "--max-cells", 144) == 0
    assert Image.open(target).size == (24, 24)


def test_cli_decode_max_pixels_is_the_one_limit(model, tmp_path, capsys):
    grid = np.broadcast_to(np.array([0, 1, 6]), (1, 12, 12, 3)).astype(np.int64)  # f = 2: 24x24 = 576 pixels
    np.save(tmp_path / "t.npy", grid)
    target = tmp_path / "o.png"
    assert vqct("decode", tmp_path / "t.npy", "-o", target, "--model", model, "--max-pixels", 500) == 2
    err = one_line_error(capsys, "decode")
    assert "24x24 image (576 pixels), over the native-size limit of 500 pixels" in err
    assert "rerun with --max-pixels N" in err and "max_native_pixels" not in err
    assert vqct("decode", tmp_path / "t.npy", "-o", target, "--model", model, "--max-pixels", 576) == 0
    assert Image.open(target).size == (24, 24)


def test_an_oversized_png_header_is_refused_before_decoding_citing_one_limit(tok, tmp_path, monkeypatch, capsys):
    """60000x60000 is far above twice PIL's limit, where PIL's own error cites the doubled figure;
    the error cites the limit the help text gives, and at --native the native limit, from the header."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(60_000, 60_000))
    pil_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(PixelLimitError, match=rf"60000x60000 = 3,600,000,000 pixels, limit {pil_limit:,}\)"):
        tok.encode(path)
    # under PIL's limit but over the native one: refused from the header too (the file holds no pixels,
    # so decoding it would fail otherwise)
    path.write_bytes(png_header(6000, 5000))
    with pytest.raises(PixelLimitError, match=rf"huge.png: 6000x5000 image .*over the native-size limit of "
                                              rf"{DEFAULT_MAX_NATIVE_PIXELS:,} pixels"):
        tok.encode(path, resize=False)
    path.write_bytes(png_header(60_000, 60_000))
    with pytest.raises(SystemExit):
        vqct("encode", "--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"{pil_limit:,}" in help_text and f"{2 * pil_limit:,}" not in help_text
    assert vqct("encode", path, "-o", tmp_path / "t.pt") == 2
    err = one_line_error(capsys, "encode")
    assert f"limit {pil_limit:,})" in err and str(2 * pil_limit) not in err


def _fail_to_allocate(monkeypatch, error: BaseException) -> None:
    """Make decoding an image file fail as a failed allocation does (PIL's Image.core.new)."""
    from PIL import ImageFile

    def load(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.mark.parametrize("native", [False, True])
def test_memory_error_while_reading_is_a_clear_error(native, tok, model, tmp_path, monkeypatch, capsys):
    path = tmp_path / "photo.png"
    random_image(30, 40).save(path)
    _fail_to_allocate(monkeypatch, MemoryError())
    with pytest.raises(NotEnoughMemoryError, match="photo.png: not enough memory to decode its 40x30 pixels"):
        tok.encode(path, resize=not native)
    args = ["--native"] if native else []
    for command, extra in (("encode", ["-o", tmp_path / "t.pt"]), ("reconstruct", ["-o", tmp_path / "r.png"])):
        assert vqct(command, path, *extra, *args, "--model", model) == 2
        err = one_line_error(capsys, command)
        assert err.count("\n") == 1 and "photo.png: not enough memory" in err
        assert "rerun with a smaller --max-pixels N" in err, err


def test_torch_allocation_failure_in_decode_is_a_clear_error(tok, model, tmp_path, monkeypatch, capsys):
    def decode_ids(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 123456789012 bytes. Error code 12 (Cannot allocate memory)")

    # both decoder precisions go through FastDecoders.decode_ids
    monkeypatch.setattr(FastDecoders, "decode_ids", decode_ids)
    grid = np.broadcast_to(np.array([0, 1, 6]), (1, 12, 12, 3)).astype(np.int64)
    with pytest.raises(NotEnoughMemoryError, match="not enough memory to decode.*max_native_pixels=N"):
        tok.decode(grid)
    np.save(tmp_path / "t.npy", grid)
    assert vqct("decode", tmp_path / "t.npy", "-o", tmp_path / "o.png", "--model", model) == 2
    err = one_line_error(capsys, "decode")
    assert "not enough memory to decode" in err and "rerun with a smaller --max-pixels N" in err
    assert not (tmp_path / "o.png").exists()
    # other RuntimeErrors are not taken for memory
    monkeypatch.setattr(FastDecoders, "decode_ids", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape bug")))
    with pytest.raises(RuntimeError, match="shape bug") as info:
        tok.decode(grid)
    assert not isinstance(info.value, MemoryError)


def test_cli_decompression_bomb_names_the_flag_not_pil(model, tmp_path, capsys):
    bomb = hostile_files(tmp_path)["bomb"]
    for native in ([], ["--native"]):
        assert vqct("encode", bomb, "-o", tmp_path / "t.pt", "--model", model, *native) == 2
        err = one_line_error(capsys, "encode")
        assert "bomb.png: image is too large" in err and "rerun with --max-pixels N" in err
        assert "MAX_IMAGE_PIXELS" not in err


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_training_data_applies_the_inference_pixel_limit(tmp_path, monkeypatch):
    from vqct_tokenizer.training.data import ImageDataset

    random_image(40, 40).save(tmp_path / "big.png")
    data = ImageDataset(tmp_path, resolution=16, crop="center")
    assert tuple(data[(0, 0)].shape) == (3, 16, 16)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # between 1x and 2x: PIL would only warn
    with pytest.raises(ImageError, match="big.png: image is too large to decode safely.*limit 1,000"):
        data[(0, 0)]


# ---------------------------------------------------------------------------------------- manifest paths and indices
def _edit_manifest(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    edit(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def _set_shard_name(name):
    def edit(m):
        m["shards"][0] = name
    return edit


def _set_entry(key, value):
    def edit(m):
        m["images"][0][key] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set_shard_name("../outside.safetensors"), "shard name '../outside.safetensors' is not a plain file name"),
    (_set_shard_name("/etc/passwd"), "shard name '/etc/passwd' is not a plain file name"),
    (_set_shard_name("sub/shard-00000.safetensors"), "is not a plain file name"),
    (_set_shard_name("..\\shard.safetensors"), "is not a plain file name"),
    (_set_shard_name(".."), "is not a plain file name"),
    (_set_shard_name(7), "is not a plain file name"),
    (_set_entry("shard", -1), r"images\[0\] \(0.png\) has shard -1, not an index into the 2 shard"),
    (_set_entry("shard", 2), "has shard 2, not an index"),
    (_set_entry("shard", "0"), "has shard '0', not an index"),
    (_set_entry("shard", True), "has shard True, not an index"),
    (_set_entry("row", -3), "has row -3"),
    (_set_entry("size", [18]), "has size"),
    (lambda m: m.update(shards="shard-00000.safetensors"), "'shards' must be a list"),
    (lambda m: m.update(version="2"), "format version '2'"),
    (lambda m: m["layout"].update(grid=[8, -8]), "layout.grid"),
])
def test_manifest_paths_and_indices_are_validated(edit, message, token_dataset, tmp_path):
    out = _edit_manifest(token_dataset, tmp_path / "out", edit)
    with pytest.raises(ValueError, match=message):
        load_token_dataset(out)


def test_manifest_with_a_shard_removed(token_dataset, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(token_dataset, out)
    (out / "shard-00000.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="shard-00000.safetensors listed in the manifest is missing; rerun the "
                                                "same encode-dataset command"):
        load_token_dataset(out)


# ---------------------------------------------------------------------------------------- atomic writes
def test_umask_is_read_without_changing_it(monkeypatch):
    from vqct_tokenizer import atomic

    try:
        has_proc = "Umask:" in Path("/proc/self/status").read_text()
    except OSError:
        has_proc = False
    if not has_proc:
        pytest.skip("no /proc/self/status Umask line here")
    before = os.umask(0o027)
    try:
        def no_umask(mask):  # any call would briefly change the umask of every thread
            raise AssertionError("os.umask was called")

        monkeypatch.setattr(atomic.os, "umask", no_umask)
        assert atomic._umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(before)


@pytest.mark.parametrize("suffix", [".pt", ".json", ".npy"])
def test_a_failed_token_file_write_leaves_the_old_file(suffix, model, tmp_path, capsys, monkeypatch):
    import torch as torch_module

    image = tmp_path / "img.png"
    random_image(16, 16).save(image)
    out = tmp_path / f"t{suffix}"
    assert vqct("encode", image, "-o", out, "--model", model) == 0
    before = out.read_bytes()

    def torn(target):  # what a full disk or a kill halfway through looks like
        if hasattr(target, "write"):
            target.write(b"half")
        else:
            Path(target).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch_module, "save", lambda obj, f, *a, **k: torn(f))
    monkeypatch.setattr(np, "save", lambda f, arr, *a, **k: torn(f))
    monkeypatch.setattr(json, "dumps", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    assert vqct("encode", image, "-o", out, "--model", model) == 2
    assert "No space left" in one_line_error(capsys, "encode")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png", out.name]  # no temp file left


# ---------------------------------------------------------------------------------------- captions are streamed
def test_gzip_captions_are_streamed_line_by_line(tmp_path):
    import gzip

    from vqct_tokenizer.codebook.captions import iter_text_captions, read_text_captions

    path = tmp_path / "c.txt.gz"
    data = gzip.compress(b"a red bird\n\n  a small cat  \n" + b"filler words\n" * 20000)
    path.write_bytes(data[: len(data) // 2])  # truncated: the end of the stream is missing
    captions = iter_text_captions(path)
    # the first captions arrive before the broken end is reached: nothing is decompressed whole
    assert [next(captions), next(captions)] == ["a red bird", "a small cat"]
    with pytest.raises(EOFError):
        read_text_captions(path)


def test_a_caption_line_without_end_is_refused_at_the_bound(tmp_path):
    import gzip

    from vqct_tokenizer.codebook.captions import read_text_captions

    path = tmp_path / "bomb.txt.gz"
    path.write_bytes(gzip.compress(b"one caption\n" + b"x" * 3_000_000))  # a gzip bomb of one endless line
    with pytest.raises(ValueError, match=r"bomb.txt.gz: line 2 is longer than 1,048,576 characters"):
        read_text_captions(path)


# ---------------------------------------------------------------------------------------- outputs outside the package
def _package_dir() -> Path:
    import vqct_tokenizer

    return Path(vqct_tokenizer.__file__).resolve().parent


@pytest.mark.parametrize("command", ["export", "build-codebook"])
@pytest.mark.parametrize("where", ["package", "weights", "non-empty"])
def test_commands_refuse_to_write_into_the_package_or_over_existing_work(command, where, tmp_path, capsys):
    from conftest import REPO_ROOT

    target = {"package": _package_dir() / "codebook" / "priors" / "vqct-test-new",
              "weights": REPO_ROOT / "weights" / "vqct-test-new",
              "non-empty": tmp_path / "out"}[where]
    if where == "non-empty":
        target.mkdir()
        (target / "keep.txt").write_text("earlier work")
    source = tmp_path / "no-such-input"  # the refusal comes first, before any input is read
    assert vqct(command, source, "-o", target) == 2
    err = one_line_error(capsys, command)
    if where == "non-empty":
        assert "already exists and is not empty" in err and "--force" in err
        assert (target / "keep.txt").read_text() == "earlier work" and len(list(target.iterdir())) == 1
    else:
        assert "refusing to write" in err and "belongs to the installed vqct-tokenizer" in err and "--force" in err
        assert not target.exists()


def test_force_lets_an_output_folder_through(tmp_path):
    from vqct_tokenizer.cli.outputs import check_output_folder

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        check_output_folder(tmp_path / "out", False, "tokenizer")
    assert check_output_folder(tmp_path / "out", True, "tokenizer") == tmp_path / "out"
    assert check_output_folder(_package_dir() / "x", True, "tokenizer") == _package_dir() / "x"
    link = tmp_path / "link"
    link.symlink_to(_package_dir(), target_is_directory=True)
    with pytest.raises(ValueError, match="refusing to write"):  # a symlink into the package counts
        check_output_folder(link / "new", False, "tokenizer")


# ---------------------------------------------------------------------------------------- messages
def test_shape_errors_report_the_shape_that_was_passed(tok):
    with pytest.raises(ImageError, match=r"got shape \(256, 256, 3\) \(channels last\? use tensor.permute"):
        tok.encode(torch.rand(256, 256, 3))
    with pytest.raises(ImageError, match=r"got shape \(16, 16\)$"):
        tok.encode(np.zeros((16, 16), dtype=np.uint8))
    with pytest.raises(ImageError, match=r"got shape \(2, 16, 16, 4\)"):
        tok.encode(np.zeros((2, 16, 16, 4), dtype=np.uint8))


def test_model_without_vocab_is_a_clear_error_in_the_cli(model, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(model, folder)
    (folder / "vocab.json").unlink()
    random_image(16, 16).save(tmp_path / "img.png")
    assert vqct("describe", tmp_path / "img.png", "--model", folder) == 2
    assert "has no vocab.json" in one_line_error(capsys, "describe")


def test_decode_uses_the_model_recorded_in_the_token_file(model, tok, tmp_path, capsys):
    random_image(16, 16).save(tmp_path / "img.png")
    assert vqct("encode", tmp_path / "img.png", "-o", tmp_path / "t.json", "--model", model) == 0
    capsys.readouterr()
    assert vqct("decode", tmp_path / "t.json", "-o", tmp_path / "o.png") == 0
    assert f"with its recorded model {str(model)!r}" in capsys.readouterr().err
    expected = tok.decode(tok.encode(tmp_path / "img.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), np.asarray(expected))


@pytest.mark.parametrize("version", [2, 1])
def test_token_file_whose_layout_disagrees_with_the_model(version, model, tmp_path, capsys):
    random_image(16, 16).save(tmp_path / "img.png")
    assert vqct("encode", tmp_path / "img.png", "-o", tmp_path / "t.json", "--model", model) == 0
    data = json.loads((tmp_path / "t.json").read_text())
    del data["config_hash"]
    if version == 2:
        data["layout"]["groups"][1]["id_range"] = [6, 40]
    else:  # the layout as version 1 recorded it
        layout = data["layout"]
        data.update(version=1, layout={"axes": ["image", *layout["axes"]], "slots": layout["slots"],
                                       "id_ranges": {"adjective": [0, 6], "noun": [6, 40]},
                                       "vocab_size": layout["vocab_size"],
                                       "downsample_factor": layout["downsample_factor"]})
    (tmp_path / "t.json").write_text(json.dumps(data))
    (tmp_path / "o.png").write_bytes(b"earlier image")
    assert vqct("decode", tmp_path / "t.json", "-o", tmp_path / "o.png", "--model", model) == 2
    err = one_line_error(capsys, "decode")
    assert "token layout disagrees" in err and "noun id_range [6, 40] vs [6, 15]" in err
    assert (tmp_path / "o.png").read_bytes() == b"earlier image"


def test_token_file_of_a_newer_version_is_refused(model, tmp_path, capsys):
    random_image(16, 16).save(tmp_path / "img.png")
    assert vqct("encode", tmp_path / "img.png", "-o", tmp_path / "t.json", "--model", model) == 0
    data = json.loads((tmp_path / "t.json").read_text())
    (tmp_path / "t.json").write_text(json.dumps(dict(data, version=3)))
    assert vqct("decode", tmp_path / "t.json", "-o", tmp_path / "o.png", "--model", model) == 2
    assert "version 3 is not one this vqct-tokenizer reads (1 to 2)" in one_line_error(capsys, "decode")


def test_push_to_hub_without_a_network_is_one_line(tok, monkeypatch):
    import huggingface_hub

    class ConnectError(Exception):  # like httpx's: not an OSError, with a message on several lines
        pass

    class OfflineApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            raise ConnectError("[Errno -2] Name or service not known\n  at socket.getaddrinfo")

    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    with pytest.raises(OSError) as info:
        tok.push_to_hub("owner/tiny")
    message = str(info.value)
    assert "\n" not in message and "could not push to 'owner/tiny'" in message
    assert "ConnectError: [Errno -2] Name or service not known" in message


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Online mode, with the Hub at a closed local port: every connection is refused at once."""
    import huggingface_hub.constants as constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")


def test_unreachable_hub_fails_fast(unreachable_hub, tmp_path):
    from vqct_tokenizer import VQCTTokenizer as Tok

    start = time.monotonic()
    with pytest.raises(OSError, match=r"could not get config.json of 'owner/absent': cannot reach the Hugging Face "
                                      r"Hub \(.*\), and it is not in the local Hub cache"):
        Tok.from_pretrained("owner/absent", cache_dir=tmp_path / "hub")
    assert time.monotonic() - start < 5  # huggingface_hub alone retries for ~25 s


def test_hf_hub_offline_set_after_import_is_honoured(unreachable_hub, tmp_path, monkeypatch):
    from vqct_tokenizer import VQCTTokenizer as Tok

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # huggingface_hub read the variable at import, before this
    start = time.monotonic()
    with pytest.raises(OSError, match="HF_HUB_OFFLINE is set, and it is not in the local Hub cache"):
        Tok.from_pretrained("owner/absent", cache_dir=tmp_path / "hub")
    assert time.monotonic() - start < 5


def test_help_texts(capsys):
    for command in ("encode-dataset", "eval"):
        with pytest.raises(SystemExit):
            vqct(command, "--help")
        text = " ".join(capsys.readouterr().out.split())
        if command == "encode-dataset":
            assert "default: auto = cuda if available, cuda:LOCAL_RANK under torchrun, else cpu" in text
        else:
            assert "--batch-size BATCH_SIZE images encoded and decoded at a time" in text


# ---------------------------------------------------------------------------------------- broken model files
def test_truncated_weights_file(model, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(model, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    random_image(16, 16).save(tmp_path / "img.png")
    assert vqct("describe", tmp_path / "img.png", "--model", folder) == 2
    assert "model.safetensors is not a valid safetensors file" in one_line_error(capsys, "describe")


def test_config_with_absurd_but_valid_sizes_allocates_nothing(model, tmp_path, monkeypatch):
    """ch=4096 with ch_mult 64: terabytes of weights. The header check must refuse it on the meta device."""
    from vqct_tokenizer import VQCTTokenizer as Tok
    from vqct_tokenizer.errors import WeightsError

    folder = tmp_path / "m"
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(ch=4096, ch_mult=[64, 64])
    (folder / "config.json").write_text(json.dumps(config))
    real_init = Tok.__init__

    def guarded_init(self, *args, **kwargs):  # building it for real would try to allocate terabytes
        assert str(torch.empty(0).device) == "meta", "the absurd model was about to be allocated"
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Tok, "__init__", guarded_init)
    with pytest.raises(WeightsError, match="do not match config.json.*wrong shapes"):
        Tok.from_pretrained(folder)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_encode_dataset_lists_images_over_the_pixel_limits(tok, model, tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    random_image(39, 40).save(source / "big.png")    # 1560 pixels, 1600 after padding (f = 2)
    random_image(20, 20).save(source / "small.png")
    out = tmp_path / "out"
    # native, through the CLI: the failure names the flag, and the run goes on
    assert vqct("encode-dataset", source, "-o", out, "--model", model, "--native", "--max-pixels", 1580,
                "--workers", "0", "--no-progress") == 0
    ds = load_token_dataset(out)
    assert ds.paths == ["small.png"]
    error = ds.failures[0]["error"]
    assert "over the native-size limit of 1,580 pixels" in error and "rerun with --max-pixels N" in error
    assert "skipped big.png" in capsys.readouterr().out
    # through the API, the file-reading limit, naming the argument
    encode_dataset(source, tmp_path / "api", tok, workers=0, progress=False, max_pixels=1000)
    error = load_token_dataset(tmp_path / "api").failures[0]["error"]
    assert "limit 1,000" in error and "encode_dataset(..., max_pixels=N)" in error and "PIL" not in error
    # raised, the native run encodes it, with the tokens of tok.encode
    encode_dataset(source, tmp_path / "raised", tok, native=True, workers=0, progress=False, max_pixels=1600)
    ds = load_token_dataset(tmp_path / "raised")
    assert ds.paths == ["big.png", "small.png"]
    assert torch.equal(ds["big.png"], tok.encode(source / "big.png", resize=False, max_native_pixels=1600))


def test_decode_with_a_recorded_model_that_is_gone(model, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(model, folder)
    random_image(16, 16).save(tmp_path / "img.png")
    assert vqct("encode", tmp_path / "img.png", "-o", tmp_path / "t.pt", "--model", folder) == 0
    shutil.rmtree(folder)
    assert vqct("decode", tmp_path / "t.pt", "-o", tmp_path / "o.png") == 2
    err = one_line_error(capsys, "decode")
    assert f"the model recorded in {tmp_path / 't.pt'}; pass --model" in err


# ---------------------------------------------------------------------------------------- help texts
def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as info:
        vqct(command, "--help")
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere


def test_encode_dataset_help_and_behaviour_agree_on_precision(model, tmp_path, capsys):
    text = help_text(capsys, "encode-dataset")
    assert "Recorded in settings.json: resuming with another precision is refused" in text
    assert "Not recorded" not in text
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        random_image(16, 16).save(folder / f"img{i}.png")
    run = ["encode-dataset", folder, "-o", tmp_path / "out", "--model", model, "--workers", 0, "--no-progress"]
    assert vqct(*run, "--precision", "fp32") == 0
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["precision"] == "fp32"
    capsys.readouterr()
    assert vqct(*run, "--precision", "bf16") == 2
    err = one_line_error(capsys, "encode-dataset")
    assert "precision='fp32'" in err and "rerun with the same --precision" in err


@pytest.mark.parametrize("command, default", [("encode", "--resize"), ("describe", "--resize"),
                                              ("reconstruct", "--native"), ("encode-dataset", None)])
def test_help_states_the_defaults_the_commands_use(command, default, capsys):
    from vqct_tokenizer.cli import build_parser
    from vqct_tokenizer.tokenizer import DEFAULT_MAX_NATIVE_PIXELS

    text = help_text(capsys, command).replace(",", "")  # figures may be written 89,478,485
    assert f"PIL's {Image.MAX_IMAGE_PIXELS})" in text or f"PIL's limit {Image.MAX_IMAGE_PIXELS})" in text
    assert f"(default: {DEFAULT_MAX_NATIVE_PIXELS}" in text
    if default is None:
        return
    output = [] if command == "describe" else ["-o", "x.png"]
    args = build_parser(command).parse_args([command, "img.png", *output])
    assert args.resize is (default == "--resize")
    marked = re.findall(r"(--resize|--native) [^-]*?\(default\)", text)
    assert marked == [default], text
