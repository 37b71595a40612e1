"""The ``vqct`` encode / decode / reconstruct / describe / models commands, run on the tiny temp model."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqct_tokenizer import load_token_dataset
from vqct_tokenizer.cli import main
from vqct_tokenizer.tokens import encoded_tokens, read_token_file, write_token_file

from conftest import ADJECTIVES, NOUNS, REPO_ROOT, make_tokenizer, random_rgb

GRID = (8, 8, 3)


def vqct(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def images(tmp_path) -> list[Path]:
    """Two same-size images and one of an odd size."""
    paths = []
    for i, (h, w) in enumerate([(40, 48), (40, 48), (37, 53)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(random_rgb(h, w, seed=i)).save(path)
        paths.append(path)
    return paths


def error_of(capsys) -> str:
    return capsys.readouterr().err


# ---------------------------------------------------------------------------------------- encode
@pytest.mark.parametrize("suffix", [".pt", ".json"])
def test_encode_stores_tokens_paths_sizes_and_model(tok, model_dir, images, tmp_path, suffix):
    out = tmp_path / f"tokens{suffix}"
    assert vqct("encode", *images, "-o", out, "--model", model_dir, "--device", "cpu") == 0
    raw = torch.load(out, weights_only=True) if suffix == ".pt" else json.loads(out.read_text())
    assert raw["format"] == "vqct-tokens" and raw["version"] == 2
    assert raw["image_paths"] == [str(p) for p in images]
    assert raw["image_sizes"] == [[40, 48], [40, 48], [37, 53]]
    assert raw["resized"] is True
    assert raw["model"] == str(model_dir) and raw["config_hash"] == tok.config.architecture_hash()
    assert raw["layout"] == tok.config.token_layout(GRID[:2])
    assert raw["layout"]["slots"] == ["adjective", "adjective", "noun"]
    assert raw["layout"]["groups"] == [{"name": "adjective", "k": 2, "id_range": [0, len(ADJECTIVES)]},
                                       {"name": "noun", "k": 1, "id_range": [len(ADJECTIVES), len(ADJECTIVES) + len(NOUNS)]}]
    expected = tok.encode([str(p) for p in images])
    assert torch.equal(torch.as_tensor(raw["tokens"]), expected)


def test_encode_npy_is_the_bare_int_array(tok, model_dir, images, tmp_path):
    out = tmp_path / "tokens.npy"
    assert vqct("encode", images[0], "-o", out, "--model", model_dir) == 0
    array = np.load(out, allow_pickle=False)
    assert array.dtype == np.int64 and array.shape == (1, *GRID)
    np.testing.assert_array_equal(array[0], tok.encode(images[0]).numpy())


def test_encode_native_mixed_sizes_refuses_npy(model_dir, images, tmp_path, capsys):
    assert vqct("encode", *images, "-o", tmp_path / "t.npy", "--model", model_dir, "--native") == 2
    assert ".pt or .json" in error_of(capsys)
    assert not (tmp_path / "t.npy").exists()


def test_encode_native_padded_size_refuses_npy(model_dir, images, tmp_path, capsys):
    assert vqct("encode", images[2], "-o", tmp_path / "t.npy", "--model", model_dir, "--native") == 2
    assert "crop back" in error_of(capsys)


def test_encode_native_npy_when_nothing_is_lost(model_dir, images, tmp_path):
    assert vqct("encode", images[0], images[1], "-o", tmp_path / "t.npy", "--model", model_dir, "--native") == 0
    assert np.load(tmp_path / "t.npy").shape == (2, 10, 12, 3)


@pytest.mark.parametrize("out", ["tokens.txt", "tokens"])
def test_encode_refuses_unknown_token_suffix(model_dir, images, tmp_path, capsys, out):
    assert vqct("encode", images[0], "-o", tmp_path / out, "--model", model_dir) == 2
    assert ".npy, .pt, .json" in error_of(capsys)


@pytest.mark.parametrize("name, message", [("missing.png", "not found"), ("bad.png", "not a readable image")])
def test_encode_bad_image_is_a_one_line_error(model_dir, tmp_path, capsys, name, message):
    (tmp_path / "bad.png").write_text("not an image")
    assert vqct("encode", tmp_path / name, "-o", tmp_path / "t.pt", "--model", model_dir) == 2
    err = error_of(capsys)
    assert message in err and err.startswith("vqct encode: error:") and "Traceback" not in err


# ---------------------------------------------------------------------------------------- decode
@pytest.mark.parametrize("suffix", [".pt", ".json", ".npy"])
def test_decode_matches_the_python_api(tok, model_dir, images, tmp_path, suffix):
    tokens = tmp_path / f"t{suffix}"
    vqct("encode", images[0], "-o", tokens, "--model", model_dir)
    assert vqct("decode", tokens, "-o", tmp_path / "out.png", "--model", model_dir) == 0
    expected = tok.decode(tok.encode(images[0]), output_type="np")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), expected)


def test_decode_several_images_numbers_the_files(model_dir, images, tmp_path):
    vqct("encode", *images[:2], "-o", tmp_path / "t.pt", "--model", model_dir)
    assert vqct("decode", tmp_path / "t.pt", "-o", tmp_path / "out.png", "--model", model_dir) == 0
    assert sorted(p.name for p in tmp_path.glob("out*")) == ["out_0.png", "out_1.png"]


def test_decode_to_a_directory_uses_the_image_names(model_dir, images, tmp_path):
    vqct("encode", *images, "-o", tmp_path / "t.json", "--model", model_dir)
    assert vqct("decode", tmp_path / "t.json", "-o", tmp_path / "decoded", "--model", model_dir) == 0
    assert sorted(p.name for p in (tmp_path / "decoded").iterdir()) == ["img0.png", "img1.png", "img2.png"]


def test_decode_npy_to_a_directory_numbers_the_files(model_dir, images, tmp_path):
    vqct("encode", *images[:2], "-o", tmp_path / "t.npy", "--model", model_dir)
    (tmp_path / "decoded").mkdir()
    assert vqct("decode", tmp_path / "t.npy", "-o", tmp_path / "decoded", "--model", model_dir) == 0
    assert sorted(p.name for p in (tmp_path / "decoded").iterdir()) == ["image_0.png", "image_1.png"]


@pytest.mark.parametrize("suffix", [".pt", ".json"])
def test_native_encode_decodes_to_the_original_sizes(model_dir, images, tmp_path, suffix):
    tokens = tmp_path / f"t{suffix}"
    assert vqct("encode", *images, "-o", tokens, "--model", model_dir, "--native") == 0
    stored = read_token_file(tokens)
    assert [tuple(g.shape) for g in stored.grids] == [(10, 12, 3), (10, 12, 3), (10, 14, 3)]
    assert vqct("decode", tokens, "-o", tmp_path / "out", "--model", model_dir) == 0
    assert [Image.open(tmp_path / "out" / f"img{i}.png").size for i in range(3)] == [(48, 40), (48, 40), (53, 37)]


def test_decode_with_another_model_names_what_differs_and_what_to_do(tok, model_dir, images, tmp_path, capsys):
    vqct("encode", images[0], "-o", tmp_path / "t.pt", "--model", model_dir)
    other = tmp_path / "other"
    make_tokenizer(k_adjectives=3).save_pretrained(other)
    assert vqct("decode", tmp_path / "t.pt", "-o", tmp_path / "o.png", "--model", other) == 2
    err = error_of(capsys)
    other_hash = make_tokenizer(k_adjectives=3).config.architecture_hash()
    assert f"encoded by model {str(model_dir)!r} (config hash {tok.config.architecture_hash()})" in err
    assert f"the model it is decoded with, {str(other)!r}, has config hash {other_hash}" in err
    # both configs are on this machine: the fields that differ, then the two ways out
    assert "They differ in k_adjectives 2 vs 3 (file's model vs this one)" in err
    assert f"Decode with the model that wrote it (--model {model_dir}), or re-encode the images with {str(other)!r}" in err
    assert not (tmp_path / "o.png").exists()


def test_decode_with_another_model_that_is_not_here_compares_layouts(model_dir, images, tmp_path, capsys):
    writer = tmp_path / "writer"
    make_tokenizer(k_adjectives=3).save_pretrained(writer)
    vqct("encode", images[0], "-o", tmp_path / "t.json", "--model", writer)
    shutil.rmtree(writer)
    assert vqct("decode", tmp_path / "t.json", "-o", tmp_path / "o.png", "--model", model_dir) == 2
    err = error_of(capsys)
    assert "Their token layouts differ in tokens_per_cell 4 vs 3" in err and "adjective k 3 vs 2" in err
    assert f"(--model {writer})" in err and "re-encode the images" in err


def test_decode_when_the_recorded_model_has_changed_since(model_dir, images, tmp_path, capsys):
    folder = tmp_path / "m"
    make_tokenizer().save_pretrained(folder)
    vqct("encode", images[0], "-o", tmp_path / "t.pt", "--model", folder)
    make_tokenizer(k_adjectives=3).save_pretrained(folder)  # retrained and exported over the same folder
    assert vqct("decode", tmp_path / "t.pt", "-o", tmp_path / "o.png") == 2
    err = error_of(capsys)
    old, new = make_tokenizer().config.architecture_hash(), make_tokenizer(k_adjectives=3).config.architecture_hash()
    assert f"{str(folder)!r} has changed since the file was written" in err
    assert f"(config hash {old})" in err and f"has config hash {new}" in err
    assert "Decode with the version of the model that wrote it" in err and "--model" not in err.split("written.")[1]


def test_decode_refuses_an_unknown_image_suffix(model_dir, images, tmp_path, capsys):
    vqct("encode", images[0], "-o", tmp_path / "t.pt", "--model", model_dir)
    assert vqct("decode", tmp_path / "t.pt", "-o", tmp_path / "out.xyz", "--model", model_dir) == 2
    assert "cannot write images" in error_of(capsys)


class _Booby:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_token_file(kind: str, tmp_path: Path) -> Path:
    """Token files that are corrupt, hostile or hold the wrong thing."""
    if kind == "garbage.pt":
        path = tmp_path / "t.pt"
        path.write_bytes(os.urandom(200))
    elif kind == "pickle.pt":
        path = tmp_path / "t.pt"
        torch.save({"tokens": _Booby(tmp_path / "pwned")}, path)
    elif kind == "plain-pickle.pt":
        path = tmp_path / "t.pt"
        path.write_bytes(pickle.dumps({"tokens": _Booby(tmp_path / "pwned")}))
    elif kind == "state-dict.pt":
        path = tmp_path / "t.pt"
        torch.save({"weight": torch.zeros(2), "bias": torch.zeros(1)}, path)
    elif kind == "binary.json":
        path = tmp_path / "t.json"
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif kind == "garbage.npy":
        path = tmp_path / "t.npy"
        path.write_bytes(b"\x93NUMPY" + os.urandom(50))
    elif kind == "object.npy":
        path = tmp_path / "t.npy"
        np.save(path, np.array([_Booby(tmp_path / "pwned")], dtype=object), allow_pickle=True)
    elif kind == "text.npy":
        path = tmp_path / "t.npy"
        path.write_text("hello")
    elif kind == "float.npy":
        path = tmp_path / "t.npy"
        np.save(path, np.zeros((1, *GRID), dtype=np.float32))
    elif kind == "truncated.json":
        path = tmp_path / "t.json"
        path.write_text('{"format": "vqct-tokens", "tokens": [[[')
    elif kind == "no-tokens.json":
        path = tmp_path / "t.json"
        path.write_text('{"format": "vqct-tokens"}')
    elif kind == "ragged.json":
        path = tmp_path / "t.json"
        path.write_text(json.dumps([[[0, 1, 12], [0, 1]]]))
    elif kind == "sizes.json":
        path = tmp_path / "t.json"
        path.write_text(json.dumps({"tokens": [np.zeros(GRID, int).tolist()], "image_sizes": [[0, -3]]}))
    elif kind == "range.json":
        path = tmp_path / "t.json"
        path.write_text(json.dumps({"tokens": [np.zeros(GRID, int).tolist()]}))  # noun slot holds id 0
    elif kind == "rank.npy":
        path = tmp_path / "t.npy"
        np.save(path, np.zeros((8, 3), dtype=np.int64))
    return path


NOT_OURS = "is not a token file written by vqct-tokenizer"


@pytest.mark.parametrize("kind, message", [
    ("garbage.pt", f"{NOT_OURS}: it is not a PyTorch file (corrupt, truncated"),
    ("pickle.pt", f"{NOT_OURS}: it holds pickled Python objects (io.open), which are never unpickled"),
    ("plain-pickle.pt", f"{NOT_OURS}: it is not a PyTorch file"),
    ("state-dict.pt", "not a token file written by vqct-tokenizer (it has no 'tokens' entry, or another 'format': "
                      "its keys are 'weight', 'bias')"),
    ("garbage.npy", f"{NOT_OURS}: it is not a NumPy .npy array"),
    ("object.npy", f"{NOT_OURS}: it holds pickled Python objects, which are never unpickled"),
    ("text.npy", f"{NOT_OURS}: it is not a NumPy .npy array"),
    ("float.npy", "integers"),
    ("truncated.json", f"{NOT_OURS}: it is not valid JSON (Expecting value at line 1, column 40)"),
    ("binary.json", f"{NOT_OURS}: it is not UTF-8 text"),
    ("no-tokens.json", "'tokens'"),
    ("ragged.json", "rectangular"),
    ("sizes.json", "positive integers"),
    ("range.json", "out of range"),
    ("rank.npy", "shape"),
])
def test_decode_bad_token_files(model_dir, tmp_path, capsys, kind, message):
    path = _bad_token_file(kind, tmp_path)
    assert vqct("decode", path, "-o", tmp_path / "o.png", "--model", model_dir) == 2
    err = error_of(capsys)
    assert err.startswith("vqct decode: error:") and message in err and "Traceback" not in err
    # none of the parsers' own advice, which is wrong for a file that is not ours
    assert not any(s in err for s in ("weights_only", "allow_pickle", "file an issue", "Warning")), err
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "o.png").exists()


def test_decode_missing_token_file(model_dir, tmp_path, capsys):
    assert vqct("decode", tmp_path / "none.pt", "-o", tmp_path / "o.png", "--model", model_dir) == 2
    assert "not found" in error_of(capsys)


# ---------------------------------------------------------------------------------------- the library token-file module
@pytest.mark.parametrize("suffix", [".pt", ".json", ".npy"])
def test_token_file_round_trip_through_the_library(tok, images, tmp_path, suffix):
    for resize in (True, False):
        paths = [str(p) for p in (images[:2] if suffix == ".npy" and not resize else images)]
        tokens, sizes = tok.encode(paths, resize=resize, return_image_sizes=True)
        grids = list(tokens)
        stored = encoded_tokens(tok, grids, paths, sizes, resized=resize)
        write_token_file(tmp_path / f"t{suffix}", stored)
        back = read_token_file(tmp_path / f"t{suffix}")
        assert len(back.grids) == len(grids) and all(torch.equal(a, b) for a, b in zip(back.grids, grids))
        assert all(g.dtype == torch.int64 for g in back.grids)
        if suffix == ".npy":  # the bare array: nothing else survives
            assert (back.image_paths, back.layout, back.model) == (None, None, None)
            continue
        assert (back.image_paths, back.image_sizes, back.resized) == (paths, [tuple(s) for s in sizes], resize)
        assert (back.model, back.config_hash) == (str(tok.name_or_path), tok.config.architecture_hash())
        assert back.layout == tok.config.token_layout(GRID[:2] if resize else None)
        # and the same file is a dataset: by index or by recorded path
        ds = load_token_dataset(tmp_path / f"t{suffix}")
        assert len(ds) == len(grids) and ds.layout == back.layout and ds.failures == []
        assert torch.equal(ds[paths[-1]], grids[-1]) and ds.image_size(paths[-1]) == tuple(sizes[-1])


def _version_1_file(tok, images, path: Path, resize: bool = True) -> None:
    """A token file exactly as vqct-tokenizer wrote it before the layout was shared (format version 1)."""
    paths = [str(p) for p in images]
    tokens, sizes = tok.encode(paths, resize=resize, return_image_sizes=True)
    cfg = tok.config
    payload = {"format": "vqct-tokens", "version": 1,
               "tokens": tokens if isinstance(tokens, torch.Tensor) else list(tokens),
               "image_paths": paths, "image_sizes": [[h, w] for h, w in sizes], "resized": resize,
               "model": str(tok.name_or_path), "config_hash": cfg.architecture_hash(),
               "layout": {"axes": ["image", "row", "column", "slot"],
                          "slots": [g.name for g in cfg.groups for _ in range(g.k)],
                          "id_ranges": {g.name: [g.code_start, g.code_end] for g in cfg.groups},
                          "vocab_size": cfg.codebook_size, "downsample_factor": cfg.downsample_factor}}
    if path.suffix == ".pt":
        torch.save(payload, path)
    else:
        grids = payload["tokens"].unbind(0) if isinstance(payload["tokens"], torch.Tensor) else payload["tokens"]
        path.write_text(json.dumps(dict(payload, tokens=[g.tolist() for g in grids])))


@pytest.mark.parametrize("suffix", [".pt", ".json"])
def test_version_1_token_files_still_load_and_decode(tok, model_dir, images, tmp_path, suffix):
    old = tmp_path / f"old{suffix}"
    _version_1_file(tok, images, old, resize=False)
    stored = read_token_file(old)
    assert stored.layout == tok.config.token_layout(None)  # read as the shared layout
    assert vqct("decode", old, "-o", tmp_path / "out", "--model", model_dir) == 0
    assert [Image.open(tmp_path / "out" / f"img{i}.png").size for i in range(3)] == [(48, 40), (48, 40), (53, 37)]
    assert torch.equal(load_token_dataset(old)[2], tok.encode(images[2], resize=False))


def test_token_file_that_contradicts_its_own_layout(tok, images, tmp_path, capsys, model_dir):
    out = tmp_path / "t.json"
    assert vqct("encode", images[0], "-o", out, "--model", model_dir) == 0
    data = json.loads(out.read_text())
    data["layout"]["grid"] = [4, 4]
    out.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"have shape \(8, 8, 3\), but the file's layout says \(4, 4, 3\)"):
        load_token_dataset(out)
    data["layout"]["grid"] = [8, 8]
    data["tokens"][0][0][0][2] = 0  # an adjective id in the noun slot
    out.write_text(json.dumps(data))
    assert vqct("decode", out, "-o", tmp_path / "o.png", "--model", model_dir) == 2
    assert "image 0: token id 0 out of range for noun slots" in error_of(capsys)


# ---------------------------------------------------------------------------------------- reconstruct, describe
def test_reconstruct_keeps_the_whole_image_by_default_and_says_so(tok, model_dir, images, tmp_path, capsys):
    assert vqct("reconstruct", images[2], "-o", tmp_path / "r.png", "--model", model_dir) == 0
    out = Image.open(tmp_path / "r.png")
    assert out.size == (53, 37)  # the whole 53x37 image, not a 32x32 centre crop
    np.testing.assert_array_equal(np.asarray(out), np.asarray(tok.reconstruct(images[2], resize=False)))
    assert capsys.readouterr().out == \
        f"{images[2]}: 53x37, native (padded to 56x40), 10x14 cells -> wrote {tmp_path / 'r.png'} (53x37)\n"


def test_reconstruct_resize_opts_into_the_models_resolution_and_says_so(tok, model_dir, images, tmp_path, capsys):
    assert vqct("reconstruct", images[2], "-o", tmp_path / "r.png", "--resize", "--model", model_dir) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png")), np.asarray(tok.reconstruct(images[2])))
    assert capsys.readouterr().out == \
        f"{images[2]}: 53x37 -> resized and centre-cropped to 32x32, 8x8 cells -> wrote {tmp_path / 'r.png'} (32x32)\n"


def test_reconstruct_over_the_native_limit_also_offers_resize(model_dir, images, tmp_path, capsys, monkeypatch):
    from vqct_tokenizer import VQCTTokenizer

    monkeypatch.setattr(VQCTTokenizer, "max_native_pixels", 1000)  # the file is read, its 56x40 is refused
    assert vqct("reconstruct", images[2], "-o", tmp_path / "r.png", "--model", model_dir) == 2
    err = capsys.readouterr().err
    assert "--max-pixels N; or rerun with --resize to reconstruct it at the model's 32x32" in err
    assert "corrupt" not in err  # a refusal by size, not taken for a bad file
    assert "Traceback" not in err and not (tmp_path / "r.png").exists()


@pytest.mark.parametrize("flag, size", [("--resize", (32 + 4 + 32, 32)), ("--native", (53 + 4 + 53, 37))])
def test_reconstruct_side_by_side(model_dir, images, tmp_path, flag, size):
    out = tmp_path / "pair.png"
    assert vqct("reconstruct", images[2], "-o", out, "--side-by-side", flag, "--model", model_dir) == 0
    pair = Image.open(out)
    assert pair.size == size
    if flag == "--native":  # the left half is the original itself
        np.testing.assert_array_equal(np.asarray(pair)[:, :53], np.asarray(Image.open(images[2]).convert("RGB")))


def test_reconstruct_words_prints_the_grid_of_the_same_tokens(tok, model_dir, images, tmp_path, capsys):
    assert vqct("reconstruct", images[0], "-o", tmp_path / "r.png", "--side-by-side", "--words", "--model", model_dir) == 0
    out = capsys.readouterr().out.splitlines()
    grid = [line for line in out if "|" in line]
    cells = [cell.strip() for line in grid for cell in line.split("|")]
    assert cells == [c for row in tok.describe(tok.encode(images[0], resize=False)) for c in row]
    assert any("adjective adjective noun" in line for line in out)


def test_reconstruct_native_keeps_the_size(model_dir, images, tmp_path):
    assert vqct("reconstruct", images[2], "-o", tmp_path / "r.jpg", "--native", "--model", model_dir) == 0
    assert Image.open(tmp_path / "r.jpg").size == (53, 37)


@pytest.mark.parametrize("flag, line", [
    ("--resize", "img2.png: 53x37 -> resized and centre-cropped to 32x32, 8x8 cells"),
    ("--native", "img2.png: 53x37, native (padded to 56x40), 10x14 cells"),
])
def test_encode_says_what_it_did_to_each_image(model_dir, images, tmp_path, capsys, flag, line):
    assert vqct("encode", images[0], images[2], "-o", tmp_path / "t.pt", flag, "--model", model_dir) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == str(tmp_path / line)
    assert out[0].startswith(f"{images[0]}: 48x40") and out[2].startswith(f"wrote {tmp_path / 't.pt'}: 2 image(s)")


def test_encode_of_an_image_at_the_models_size(model_dir, tmp_path, capsys):
    Image.fromarray(random_rgb(32, 32)).save(tmp_path / "square.png")
    assert vqct("encode", tmp_path / "square.png", "-o", tmp_path / "t.pt", "--model", model_dir) == 0
    assert f"square.png: 32x32 -> already the model's 32x32, 8x8 cells" in capsys.readouterr().out


def _top_words(tok, ids: torch.Tensor, top: int) -> str:
    counts = sorted(Counter(ids.flatten().tolist()).items(), key=lambda c: (-c[1], c[0]))[:top]
    return ", ".join(f"{tok.vocab[i]} {n}" for i, n in counts)


def test_describe_prints_a_summary_by_default(tok, model_dir, images, capsys):
    assert vqct("describe", images[2], "--model", model_dir, "--top", 3) == 0
    tokens = tok.encode(images[2])
    adjectives, nouns = tokens[..., :2], tokens[..., 2]
    assert capsys.readouterr().out.splitlines() == [
        f"{images[2]}: 53x37 -> resized and centre-cropped to 32x32, 8x8 cells",
        f"  adjectives (128 ids, 2 per cell, {len(adjectives.unique())} distinct): {_top_words(tok, adjectives, 3)}",
        f"  nouns (64 ids, {len(nouns.unique())} distinct): {_top_words(tok, nouns, 3)}",
        "(the 3 most frequent words of each group, with how many times each occurs; --full prints the whole grid)",
    ]


def test_describe_full_prints_the_word_grid(tok, model_dir, images, capsys):
    assert vqct("describe", images[0], "--full", "--model", model_dir) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header == f"==> {images[0]}: 48x40 -> resized and centre-cropped to 32x32, 8x8 cells, " \
                     "each cell 'adjective adjective noun' <=="
    assert len(lines) == GRID[0]
    cells = [cell.strip() for line in lines for cell in line.split("|")]
    assert cells == [c for row in tok.describe(tok.encode(images[0])) for c in row]
    assert all(set(c.split()[:2]) <= set(ADJECTIVES) and c.split()[2] in NOUNS for c in cells)


def test_describe_several_images(model_dir, images, capsys):
    assert vqct("describe", images[0], images[2], "--native", "--full", "--model", model_dir) == 0
    out = capsys.readouterr().out
    assert f"==> {images[0]}: 48x40, native, 10x12 cells" in out
    assert f"==> {images[2]}: 53x37, native (padded to 56x40), 10x14 cells" in out
    assert len(out.strip().splitlines()) == 2 + 10 + 10 + 1  # headers, two 10-row grids, a blank line
    assert vqct("describe", images[0], images[2], "--model", model_dir) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2 * 3 + 1 + 1  # two summaries, a blank line, the note


# ---------------------------------------------------------------------------------------- model choice
def test_missing_default_model_is_a_clear_error(images, tmp_path, capsys, monkeypatch):
    import vqct_tokenizer.defaults

    monkeypatch.setattr(vqct_tokenizer.defaults, "find_shipped", lambda name: None)
    assert vqct("describe", images[0]) == 2
    err = error_of(capsys)
    assert "default model" in err and "--model" in err


def test_model_not_found_offline_is_a_one_line_error(images, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert vqct("describe", images[0], "--model", "nobody/nothing") == 2
    err = error_of(capsys)
    assert "nobody/nothing" in err and "Traceback" not in err


def test_explicit_device(model_dir, images):
    assert vqct("describe", images[0], "--model", model_dir, "--device", "cpu") == 0


# ---------------------------------------------------------------------------------------- as a program
def test_python_m_vqct_tokenizer(model_dir, images, tmp_path):
    out = tmp_path / "t.json"
    result = subprocess.run([sys.executable, "-m", "vqct_tokenizer", "encode", str(images[0]), "-o", str(out),
                             "--model", str(model_dir)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and json.loads(out.read_text())["image_sizes"] == [[40, 48]]


def test_cli_tokens_commands_do_not_import_training_dependencies(model_dir, images):
    code = ("import sys\n"
            "from vqct_tokenizer.cli import main\n"
            f"assert main(['describe', {str(images[0])!r}, '--model', {str(model_dir)!r}]) == 0\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('nltk', 'transformers')"
            " or m.startswith(('vqct_tokenizer.training', 'vqct_tokenizer.generation'))]\n"
            "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY []"


# ---------------------------------------------------------------------------------------- vqct models
def _hub_cache(root: Path, repo_id: str, folder: Path) -> int:
    """``folder`` laid out as huggingface_hub caches a download of ``repo_id``; returns the bytes stored."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in folder.iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    return sum(f.stat().st_size for f in folder.iterdir())


def _no_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _model_rows(out: str) -> dict[str, list[str]]:
    """`vqct models` rows by model name, split into columns (two or more spaces apart)."""
    lines = out.splitlines()[1:-1]
    return {row[0].removesuffix(" (default)"): row for row in (re.split(r"\s{2,}", line) for line in lines)}


def test_models_lists_shipped_models_with_their_size_layout_and_card_figures(capsys, monkeypatch, tmp_path):
    from vqct_tokenizer.config import VQCTConfig
    from vqct_tokenizer.defaults import DEFAULT_MODEL, find_shipped, shipped_names

    _no_network(monkeypatch)
    assert vqct("models", "--cache-dir", tmp_path / "empty") == 0
    rows = _model_rows(capsys.readouterr().out)
    assert sorted(rows) == shipped_names() and next(iter(rows)) == DEFAULT_MODEL
    for name, row in rows.items():
        folder = find_shipped(name)
        config = VQCTConfig.load(folder / "config.json")
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        layout = (f"1 code (N={config.num_codes})" if config.quantizer == "vq" else
                  f"{config.k_adjectives} adjectives + 1 noun (A={config.num_adjectives}, N={config.num_nouns})")
        assert row[1:6] == ["shipped", f"{size / 1e6:.1f} MB", str(config.downsample_factor),
                            str(config.resolution), layout]
        assert re.fullmatch(r"PSNR \d+\.\d\d dB, SSIM \d\.\d{4} \(.+\)", row[6]), row  # every card has a table


def test_models_takes_the_figures_of_the_models_own_column(tmp_path):
    from vqct_tokenizer.cli.models import card_headline

    card = tmp_path / "README.md"
    card.write_text("# m\n\n## Results\n\n| metric | other | my-model (this model) |\n|---|---|---|\n"
                    "| PSNR (dB) | 19.00 | 21.25 |\n| SSIM | 0.4000 | 0.6125 |\n\n"
                    "| metric (faces, 64²) | my-model |\n|---|---|\n| PSNR (dB) | 1.00 |\n")
    assert card_headline(card, "owner/my-model") == "PSNR 21.25 dB, SSIM 0.6125 (Results)"
    card.write_text("| metric (faces, 64², N = 10) | my-model |\n|---|---|\n| PSNR (dB) | 18.5 |\n| SSIM | n/a |\n")
    assert card_headline(card, "my-model") == "PSNR 18.5 dB (faces, 64², N = 10)"
    card.write_text("no table here\n")
    assert card_headline(card, "my-model") is None
    assert card_headline(tmp_path / "missing.md", "my-model") is None


def test_models_lists_vqct_models_in_the_hub_cache_offline(model_dir, tmp_path, capsys, monkeypatch):
    from vqct_tokenizer import VQCTTokenizer

    _no_network(monkeypatch)
    cache = tmp_path / "hub"
    stored = _hub_cache(cache, "someone/tiny-vqct", model_dir)
    text_encoder = tmp_path / "bert"
    text_encoder.mkdir()
    (text_encoder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (text_encoder / "model.safetensors").write_bytes(b"not read")
    _hub_cache(cache, "someone/bert", text_encoder)  # not a VQCT tokenizer: left out
    assert vqct("models", "--cache-dir", cache) == 0
    rows = _model_rows(capsys.readouterr().out)
    assert "someone/bert" not in rows
    assert rows["someone/tiny-vqct"] == ["someone/tiny-vqct", "hub cache", f"{stored / 1e6:.1f} MB", "4", "32",
                                         "2 adjectives + 1 noun (A=12, N=20)", "-"]
    # and the name it lists is one --model loads, from the cache alone
    tok = VQCTTokenizer.from_pretrained("someone/tiny-vqct", cache_dir=cache, local_files_only=True)
    assert tok.config.num_nouns == len(NOUNS)


def test_train_overrides_may_follow_a_flag_and_other_strays_are_still_errors(capsys):
    from vqct_tokenizer.cli import parse

    args = parse(["train", "--config", "open-f8", "optim.steps=10", "--resume", "run.out_dir=runs/x", "run.seed=3"])
    assert args.resume and args.overrides == ["optim.steps=10", "run.out_dir=runs/x", "run.seed=3"]
    with pytest.raises(SystemExit):
        parse(["train", "--config", "open-f8", "optim.steps=10", "--resume", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a command without overrides takes no KEY=VALUE
        parse(["models", "optim.steps=10"])
