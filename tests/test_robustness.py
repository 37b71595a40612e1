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
from vqct_tokenizer.errors import ImageError, TokenError
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
    from vqct_tokenizer.codebook.prior import CodebookPrior, save_prior

    root = tmp_path_factory.mktemp("train")
    g = torch.Generator().manual_seed(0)
    adjectives, nouns = [f"a{i}" for i in range(6)], [f"n{i}" for i in range(9)]
    edges = [(adjectives[i], nouns[i], 2) for i in range(6)]
    save_prior(CodebookPrior(adjectives, nouns, [5] * 6, [5] * 9, edges, torch.randn(6, 10, generator=g),
                             torch.randn(9, 10, generator=g), {}), root / "prior")
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
