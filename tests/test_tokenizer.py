"""The slim VQCTTokenizer: API contract, inputs, sizes, bad input, persistence, Hub loading."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vqct_tokenizer import VQCTConfig, VQCTTokenizer
from vqct_tokenizer.errors import ConfigError, ImageError, TokenError, WeightsError

from conftest import ADJECTIVES, NOUNS, REPO_ROOT, make_tokenizer, random_rgb

A, N, K = len(ADJECTIVES), len(NOUNS), 2
GRID = (8, 8, K + 1)  # resolution 32, f = 4


# ---------------------------------------------------------------------------------------- contract
def test_encode_returns_long_grid_with_the_documented_layout(tok, rgb):
    tokens = tok.encode(rgb)
    assert tokens.dtype == torch.long and tuple(tokens.shape) == GRID
    adjectives, nouns = tokens[..., :K], tokens[..., K]
    assert ((adjectives >= 0) & (adjectives < A)).all()
    assert ((nouns >= A) & (nouns < A + N)).all()


def test_adjectives_are_nearest_first(tok, rgb):
    """Slot 0 holds the nearest adjective code, slot 1 the second nearest."""
    x = torch.stack(tok.preprocess(rgb)[0])
    z = tok.model.encode_latent(x)[0, :tok.config.codebook_dim].permute(1, 2, 0)  # (h, w, D)
    tokens = tok.encode(rgb)
    dist = lambda slot: (z - tok.codebook[tokens[..., slot]]).pow(2).sum(-1)  # noqa: E731
    assert (dist(0) <= dist(1) + 1e-5).all()


def test_decode_output_types(tok, rgb):
    tokens = tok.encode(rgb)
    pil = tok.decode(tokens)
    arr = tok.decode(tokens, output_type="np")
    ten = tok.decode(tokens, output_type="pt")
    assert isinstance(pil, Image.Image) and pil.size == (32, 32) and pil.mode == "RGB"
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    assert tuple(ten.shape) == (3, 32, 32) and ten.min() >= 0 and ten.max() <= 1
    np.testing.assert_array_equal(np.asarray(pil), arr)


def test_decode_batch_gives_a_list(tok, rgb):
    tokens = tok.encode([rgb, rgb[::-1]])
    images = tok.decode(tokens)
    assert isinstance(images, list) and len(images) == 2
    assert tok.decode(tokens, output_type="np").shape == (2, 32, 32, 3)


def test_reconstruct_is_decode_of_encode(tok, rgb):
    np.testing.assert_array_equal(np.asarray(tok.reconstruct(rgb)), np.asarray(tok.decode(tok.encode(rgb))))


def test_vocab_and_describe(tok, rgb):
    assert tok.vocab == ADJECTIVES + NOUNS
    grid = tok.describe(tok.encode(rgb))
    assert len(grid) == GRID[0] and all(len(row) == GRID[1] for row in grid)
    for cell in (c for row in grid for c in row):
        *adjectives, noun = cell.split(" ")
        assert len(adjectives) == K and set(adjectives) <= set(ADJECTIVES) and noun in NOUNS
    text = tok.format_grid(grid)
    assert len(text.splitlines()) == GRID[0]


def test_describe_batch(tok, rgb):
    grids = tok.describe(tok.encode([rgb, rgb]))
    assert len(grids) == 2 and grids[0] == grids[1]


def test_variants_round_trip(variant_dir, rgb):
    tok = VQCTTokenizer.from_pretrained(variant_dir)
    tokens = tok.encode(rgb)
    assert tokens.shape[-1] == tok.tokens_per_cell
    assert tok.decode(tokens).size == (32, 32)
    assert len(tok.describe(tokens)) == 8


def test_shared_codebook_slots_search_the_whole_vocabulary(tmp_path):
    tok = make_tokenizer(shared_codebook=True)
    noun_as_adjective = torch.full(GRID, A)  # id A is a noun: allowed in every slot of this variant
    assert tok.decode(noun_as_adjective).size == (32, 32)


# ---------------------------------------------------------------------------------------- inputs
def _pil_modes(rgb: np.ndarray) -> dict[str, Image.Image]:
    img = Image.fromarray(rgb)
    gray16 = (np.asarray(img.convert("L"), dtype=np.uint16) * 257)
    return {
        "RGB": img,
        "RGBA": img.convert("RGBA"),
        "LA": img.convert("LA"),
        "L": img.convert("L"),
        "P": img.convert("P"),
        "I;16": Image.fromarray(gray16),  # uint16 arrays become mode I;16
        "CMYK": img.convert("CMYK"),
    }


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "I;16", "CMYK"])
def test_every_pil_mode_is_accepted(tok, rgb, mode):
    img = _pil_modes(rgb)[mode]
    assert img.mode == mode
    assert tuple(tok.encode(img).shape) == GRID


@pytest.mark.parametrize("mode, equivalent", [
    ("RGBA", lambda img: np.asarray(img)),                                  # opaque alpha changes nothing
    ("L", lambda img: np.repeat(np.asarray(img.convert("L"))[..., None], 3, axis=2)),
    ("LA", lambda img: np.repeat(np.asarray(img.convert("L"))[..., None], 3, axis=2)),
    ("I;16", lambda img: np.repeat(np.asarray(img.convert("L"))[..., None], 3, axis=2)),
])
def test_pil_modes_convert_to_the_expected_rgb(tok, rgb, mode, equivalent):
    img = Image.fromarray(rgb)
    assert torch.equal(tok.encode(_pil_modes(rgb)[mode]), tok.encode(equivalent(img)))


def test_transparency_is_composited_over_white(tok, rgb):
    clear = Image.fromarray(rgb).convert("RGBA")
    clear.putalpha(0)
    white = np.full_like(rgb, 255)
    assert torch.equal(tok.encode(clear), tok.encode(white))


def test_path_pil_numpy_and_tensor_give_the_same_tokens(tok, rgb, tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    expected = tok.encode(rgb)
    as_tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    for image in (str(path), path, Image.fromarray(rgb), as_tensor, rgb.astype(np.float32) / 255,
                  torch.from_numpy(rgb).permute(2, 0, 1).contiguous()):
        assert torch.equal(tok.encode(image), expected), type(image)


def test_batch_equals_stack_of_single_images(tok):
    images = [random_rgb(seed=s) for s in range(3)]
    singles = torch.stack([tok.encode(im) for im in images])
    assert torch.equal(tok.encode(np.stack(images)), singles)                                  # numpy batch
    batch_t = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(tok.encode(batch_t), singles)                                           # tensor batch
    assert torch.equal(tok.encode(images), singles)                                            # list
    assert torch.equal(tok.encode(images, batch_size=2), singles)                              # chunked


def test_list_of_mixed_sizes_and_types(tok, rgb, tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(random_rgb(20, 30, seed=1)).save(path)
    tokens = tok.encode([str(path), Image.fromarray(rgb), random_rgb(64, 33, seed=2),
                         torch.rand(3, 17, 29)])
    assert tuple(tokens.shape) == (4, *GRID)


def test_single_image_batch_stays_batched(tok, rgb):
    assert tuple(tok.encode(rgb[None]).shape) == (1, *GRID)
    assert tuple(tok.encode([rgb]).shape) == (1, *GRID)


# ---------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("height, width", [(37, 53), (1, 1), (32, 32), (7, 200)])
def test_odd_sizes_resize_to_the_model_grid(tok, height, width):
    assert tuple(tok.encode(random_rgb(height, width)).shape) == GRID


@pytest.mark.parametrize("height, width", [(37, 53), (1, 1), (32, 32), (4, 12)])
def test_native_size_round_trip_gives_back_the_original_size(tok, height, width):
    image = random_rgb(height, width)
    tokens, size = tok.encode(image, resize=False, return_image_sizes=True)
    f = tok.downsample_factor
    assert tuple(tokens.shape) == (-(-height // f), -(-width // f), K + 1)
    assert size == (height, width)
    assert tok.decode(tokens, image_size=size).size == (width, height)
    assert tok.reconstruct(image, resize=False).size == (width, height)
    assert tok.reconstruct(image, resize=False, output_type="np").shape == (height, width, 3)


def test_native_size_mixed_list(tok):
    images = [random_rgb(37, 53), random_rgb(16, 8, seed=3)]
    tokens, sizes = tok.encode(images, resize=False, return_image_sizes=True)
    assert isinstance(tokens, list) and [tuple(t.shape[:2]) for t in tokens] == [(10, 14), (4, 2)]
    assert sizes == [(37, 53), (16, 8)]
    assert [im.size for im in tok.reconstruct(images, resize=False)] == [(53, 37), (8, 16)]
    assert [im.size for im in tok.decode(tokens, image_size=sizes)] == [(53, 37), (8, 16)]


# ---------------------------------------------------------------------------------------- bad input
def _valid(tok, rgb):
    return tok.encode(rgb).clone()


@pytest.mark.parametrize("slot, value, needle", [
    (0, -1, "out of range"),
    (0, A, "adjective"),          # a noun id in an adjective slot
    (1, A + N, "adjective"),
    (2, 0, "noun"),               # an adjective id in the noun slot
    (2, A + N, "noun"),
    (2, 10**9, "noun"),
])
def test_token_id_out_of_range_per_slot(tok, rgb, slot, value, needle):
    tokens = _valid(tok, rgb)
    tokens[3, 4, slot] = value
    with pytest.raises(TokenError, match=needle):
        tok.decode(tokens)


@pytest.mark.parametrize("shape, needle", [
    ((8, 3), "shape"),            # rank 2
    ((1, 1, 8, 8, 3), "shape"),   # rank 5
    ((8, 8, 2), "last dimension"),
    ((8, 8, 4), "last dimension"),
    ((0, 8, 3), "empty"),
])
def test_token_grid_of_wrong_shape(tok, shape, needle):
    with pytest.raises(TokenError, match=needle):
        tok.decode(torch.zeros(shape, dtype=torch.long) + A * (torch.arange(shape[-1]) == shape[-1] - 1))


@pytest.mark.parametrize("tokens", [
    torch.zeros(GRID), np.zeros(GRID, dtype=np.float32), torch.zeros(GRID, dtype=torch.bool),
    [[[0.5, 0.5, 12.0]]], "tokens", [[[0, 0]], [[0]]],
])
def test_tokens_that_are_not_integer_grids(tok, tokens):
    with pytest.raises(TokenError):
        tok.decode(tokens)


def test_tokens_as_numpy_and_nested_lists_decode_the_same(tok, rgb):
    tokens = tok.encode(rgb)
    expected = tok.decode(tokens, output_type="np")
    np.testing.assert_array_equal(tok.decode(tokens.numpy().astype(np.int32), output_type="np"), expected)
    np.testing.assert_array_equal(tok.decode(tokens.tolist(), output_type="np"), expected)


def _write_bad_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / ("bad.jpg" if kind == "truncated_jpeg" else "bad.png")
    if kind == "garbage":
        path.write_bytes(os.urandom(300))
    elif kind == "text_renamed":
        path.write_text("this is not an image\n")
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "truncated_jpeg":
        full = tmp_path / "full.jpg"
        Image.fromarray(random_rgb(64, 64)).save(full, quality=95)
        data = full.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "truncated_png":
        full = tmp_path / "full.png"
        Image.fromarray(random_rgb(64, 64)).save(full)
        data = full.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    return path


@pytest.mark.parametrize("kind", ["garbage", "text_renamed", "empty_file", "truncated_jpeg", "truncated_png"])
def test_unreadable_image_files(tok, tmp_path, kind):
    path = _write_bad_file(kind, tmp_path)
    with pytest.raises(ImageError, match="bad"):  # the message names the file
        tok.encode(path)


def test_missing_file_and_directory(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        tok.encode(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        tok.encode(tmp_path)


@pytest.mark.parametrize("image", [
    np.zeros((0, 5, 3), dtype=np.uint8),
    np.zeros((5, 0, 3), dtype=np.uint8),
    torch.zeros(3, 0, 4),
    torch.zeros(2, 3, 4, 0),
    Image.new("RGB", (0, 4)),
], ids=["np-h0", "np-w0", "pt-h0", "pt-batch-w0", "pil-w0"])
def test_zero_size_image(tok, image):
    with pytest.raises(ImageError, match="zero size"):
        tok.encode(image)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_tensors(tok, bad):
    x = torch.rand(3, 16, 16)
    x[1, 2, 3] = bad
    with pytest.raises(ImageError, match="NaN or inf"):
        tok.encode(x)
    with pytest.raises(ImageError, match="NaN or inf"):
        tok.encode(x.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("low, high", [(-0.5, 1.0), (0.0, 2.0), (0.0, 255.0), (-1.0, 1.0)])
def test_out_of_range_float_tensor(tok, low, high):
    x = torch.linspace(low, high, 3 * 16 * 16).reshape(3, 16, 16)
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        tok.encode(x)


def test_float_round_off_above_one_is_tolerated(tok):
    assert tuple(tok.encode(torch.full((3, 16, 16), 1.0 + 1e-6)).shape) == GRID


@pytest.mark.parametrize("image, needle", [
    (np.zeros((16, 16), dtype=np.uint8), "shape"),
    (np.zeros((16, 16, 4), dtype=np.uint8), "shape"),
    (np.zeros((3, 16, 16), dtype=np.uint8), "shape"),       # channels first is not numpy's layout
    (np.zeros((1, 2, 16, 16, 3), dtype=np.uint8), "shape"),
    (np.zeros((16, 16, 3), dtype=np.int16), "dtype"),
    (torch.zeros(16, 16, 3), "shape"),                      # channels last is not torch's layout
    (torch.zeros(3, 16, 16, dtype=torch.int32), "dtype"),
    ([], "empty"),
    ([[np.zeros((4, 4, 3), dtype=np.uint8)]], "list"),
    (42, "int"),
])
def test_wrong_array_shapes_and_types(tok, image, needle):
    with pytest.raises(ImageError, match=needle):
        tok.encode(image)


def test_bad_input_errors_are_value_errors():
    for error in (ImageError, TokenError, WeightsError, ConfigError):
        assert issubclass(error, ValueError)


def test_decode_image_size_larger_than_grid(tok, rgb):
    with pytest.raises(ValueError, match="larger"):
        tok.decode(tok.encode(rgb), image_size=(33, 32))


# ---------------------------------------------------------------------------------------- device, dtype, determinism
def test_bfloat16_load_encodes_and_decodes(model_dir, rgb):
    tok = VQCTTokenizer.from_pretrained(model_dir, dtype=torch.bfloat16, device="cpu")
    assert tok.dtype == torch.bfloat16 and tok.device.type == "cpu"
    tokens = tok.encode(rgb)
    assert tokens.dtype == torch.long and tuple(tokens.shape) == GRID
    image = tok.decode(tokens)
    assert image.size == (32, 32)
    assert tok.decode(tokens, output_type="pt").dtype == torch.float32


def test_to_moves_model_and_inputs_follow(model_dir, rgb):
    tok = VQCTTokenizer.from_pretrained(model_dir).to(torch.float64)
    assert tok.dtype == torch.float64
    assert tuple(tok.encode(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255).shape) == GRID


def test_encode_and_decode_run_without_autograd(tok, rgb):
    assert not tok.encode(rgb).requires_grad
    assert not tok.decode(tok.encode(rgb), output_type="pt").requires_grad


def test_determinism(model_dir, rgb):
    a = VQCTTokenizer.from_pretrained(model_dir)
    b = VQCTTokenizer.from_pretrained(model_dir)
    assert torch.equal(a.encode(rgb), a.encode(rgb))
    assert torch.equal(a.encode(rgb), b.encode(rgb))
    np.testing.assert_array_equal(a.decode(a.encode(rgb), output_type="np"),
                                  b.decode(b.encode(rgb), output_type="np"))


# ---------------------------------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path, rgb):
    original = make_tokenizer(seed=5)
    original.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    loaded = VQCTTokenizer.from_pretrained(tmp_path / "m")
    assert loaded.config == original.config and loaded.vocab == original.vocab
    saved, fresh = original.state_dict(), loaded.state_dict()
    assert saved.keys() == fresh.keys()
    assert all(torch.equal(saved[k], fresh[k]) for k in saved)
    assert set(load_file(str(tmp_path / "m" / "model.safetensors"))) == set(saved)
    assert torch.equal(original.encode(rgb), loaded.encode(rgb))


def test_config_json_is_the_config_dict(model_dir, tok):
    data = json.loads((model_dir / "config.json").read_text())
    assert data == tok.config.to_dict()
    assert VQCTConfig.from_dict(data) == tok.config
    assert {"resize_mode", "resample", "resolution"} <= set(data)  # preprocessing lives in config.json


def _copy_model(model_dir: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in model_dir.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_weights(folder: Path, edit) -> None:
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.pop("codebook"), "missing keys"),
    (lambda s: s.pop("model.encoder.conv_in.weight"), "missing keys"),
    (lambda s: s.update(extra=torch.zeros(1)), "unexpected keys"),
    (lambda s: s.update(codebook=torch.zeros(A + N + 1, 8)), "wrong shapes"),
    (lambda s: s.update({"model.quant_conv.bias": torch.zeros(3)}), "wrong shapes"),
    (lambda s: s["codebook"].__setitem__((0, 0), float("nan")), "NaN"),
])
def test_weights_that_do_not_match_the_config(model_dir, tmp_path, edit, needle):
    folder = _copy_model(model_dir, tmp_path / "m")
    _edit_weights(folder, edit)
    with pytest.raises(WeightsError, match=needle):
        VQCTTokenizer.from_pretrained(folder)


class _Booby:
    """Unpickling this creates a marker file: proof that a loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_renamed_safetensors_is_refused_without_unpickling(model_dir, tmp_path, writer):
    folder = _copy_model(model_dir, tmp_path / "m")
    marker = tmp_path / "pwned"
    payload = {"codebook": _Booby(marker)}
    if writer == "pickle":
        (folder / "model.safetensors").write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, folder / "model.safetensors")
    with pytest.raises(WeightsError, match="safetensors"):
        VQCTTokenizer.from_pretrained(folder)
    assert not marker.exists()


def test_missing_weights_file(model_dir, tmp_path):
    folder = _copy_model(model_dir, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="weights"):
        VQCTTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c.pop("resolution"), "missing"),
    (lambda c: c.pop("ch_mult"), "missing"),
    (lambda c: c.update(resolution=-32), "resolution"),
    (lambda c: c.update(resolution=34), "multiple"),
    (lambda c: c.update(ch_mult=[]), "ch_mult"),
    (lambda c: c.update(ch=10**9), "ch"),
    (lambda c: c.update(num_adjectives=0), "num_adjectives"),
    (lambda c: c.update(k_adjectives=A + 1), "k_adjectives"),
    (lambda c: c.update(quantizer="gumbel"), "quantizer"),
    (lambda c: c.update(resize_mode="stretch"), "resize_mode"),
    (lambda c: c.update(norm_groups=7), "norm_groups"),
    (lambda c: c.update(ch="sixteen"), "wrong type"),
    (lambda c: c.update(colour="blue"), "unknown"),
])
def test_config_with_missing_or_absurd_values(model_dir, tmp_path, edit, needle):
    folder = _copy_model(model_dir, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=needle):
        VQCTTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\"config\""])
def test_config_that_is_not_a_json_object(model_dir, tmp_path, text):
    folder = _copy_model(model_dir, tmp_path / "m")
    (folder / "config.json").write_text(text)
    with pytest.raises(ConfigError):
        VQCTTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("vocab, needle", [
    ({"adjectives": ADJECTIVES[:-1], "nouns": NOUNS}, "adjectives"),
    ({"adjectives": ADJECTIVES, "nouns": NOUNS + ["extra"]}, "nouns"),
    ({"adjectives": ADJECTIVES, "nouns": [1] * N}, "strings"),
    ({"words": ADJECTIVES + NOUNS}, "adjectives"),
    (ADJECTIVES + NOUNS, "adjectives"),
])
def test_vocab_mismatch(model_dir, tmp_path, vocab, needle):
    folder = _copy_model(model_dir, tmp_path / "m")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ConfigError, match=needle):
        VQCTTokenizer.from_pretrained(folder)


def test_vocab_of_wrong_length_in_the_constructor():
    with pytest.raises(ConfigError, match="vocab"):
        VQCTTokenizer(make_tokenizer().config, vocab=["word"] * 3)


def test_missing_vocab_is_an_error_unless_allowed(model_dir, tmp_path):
    folder = _copy_model(model_dir, tmp_path / "m")
    (folder / "vocab.json").unlink()
    with pytest.raises(ConfigError, match="has no vocab.json.*placeholder words.*allow_missing_vocab=True"):
        VQCTTokenizer.from_pretrained(folder)
    tok = VQCTTokenizer.from_pretrained(folder, allow_missing_vocab=True)
    assert tok.vocab[0] == "adj0" and tok.vocab[A] == "noun0"


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        VQCTTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["./no/such/dir", "no-such-model", "a/b/c"])
def test_name_that_is_neither_folder_nor_repo_id(name):
    with pytest.raises(FileNotFoundError, match="not a Hub repo id"):
        VQCTTokenizer.from_pretrained(name)


# ---------------------------------------------------------------------------------------- Hub
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(cache: Path, repo_id: str, model_dir: Path, files=("config.json", "model.safetensors", "vocab.json")) -> Path:
    """The layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)  # no newline: the hub reads the hash verbatim
    for name in files:
        (snapshot / name).write_bytes((model_dir / name).read_bytes())
    return snapshot


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 for this process: huggingface_hub reads the variable once, at import."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hub_repo_id_loads_offline_from_the_cache(model_dir, tok, tmp_path, offline, rgb):
    snapshot = make_hub_cache(tmp_path / "hub", "vqct-test/tiny", model_dir)
    loaded = VQCTTokenizer.from_pretrained("vqct-test/tiny", cache_dir=tmp_path / "hub")
    assert torch.equal(loaded.encode(rgb), tok.encode(rgb)) and loaded.vocab == tok.vocab
    again = VQCTTokenizer.from_pretrained("vqct-test/tiny", cache_dir=tmp_path / "hub", revision=COMMIT)
    assert torch.equal(again.encode(rgb), tok.encode(rgb))
    assert snapshot.is_dir()


def test_hub_cache_without_vocab_needs_allow_missing_vocab(model_dir, tmp_path, offline):
    make_hub_cache(tmp_path / "hub", "vqct-test/novocab", model_dir, files=("config.json", "model.safetensors"))
    with pytest.raises(ConfigError, match="'vqct-test/novocab' has no vocab.json"):
        VQCTTokenizer.from_pretrained("vqct-test/novocab", cache_dir=tmp_path / "hub")
    loaded = VQCTTokenizer.from_pretrained("vqct-test/novocab", cache_dir=tmp_path / "hub", allow_missing_vocab=True)
    assert loaded.vocab[0] == "adj0"


def test_hub_repo_not_in_cache_offline_is_a_clear_error(tmp_path, offline):
    with pytest.raises(OSError, match=r"vqct-test/absent.*(cache|offline)"):
        VQCTTokenizer.from_pretrained("vqct-test/absent", cache_dir=tmp_path / "hub")


def test_hub_offline_by_environment_in_a_fresh_process(model_dir, tmp_path):
    """The real HF_HUB_OFFLINE=1 path, read at import, with the cache found through HF_HUB_CACHE."""
    make_hub_cache(tmp_path / "hub", "vqct-test/tiny", model_dir)
    code = ("from vqct_tokenizer import VQCTTokenizer\n"
            "tok = VQCTTokenizer.from_pretrained('vqct-test/tiny')\n"
            "print(tuple(tok.encode(__import__('torch').rand(3, 32, 32)).shape))\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(GRID)


def test_push_to_hub_uploads_the_saved_folder(tok, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", {"token": token}))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", dict(kwargs, repo_id=repo_id)))

        def upload_folder(self, **kwargs):
            folder = Path(kwargs["folder_path"])
            kwargs["files"] = sorted(p.name for p in folder.iterdir())
            kwargs["config"] = json.loads((folder / "config.json").read_text())
            calls.append(("upload_folder", kwargs))
            return "https://huggingface.co/owner/tiny/commit/abc"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = tok.push_to_hub("owner/tiny", private=True, token="hf_x", commit_message="first")
    assert url.endswith("/commit/abc")
    names = [c[0] for c in calls]
    assert names == ["init", "create_repo", "upload_folder"]
    assert calls[0][1]["token"] == "hf_x"
    assert calls[1][1]["repo_id"] == "owner/tiny" and calls[1][1]["private"] is True
    upload = calls[2][1]
    assert upload["repo_id"] == "owner/tiny" and upload["commit_message"] == "first"
    assert upload["files"] == ["config.json", "model.safetensors", "vocab.json"]
    assert upload["config"] == tok.config.to_dict()


# ---------------------------------------------------------------------------------------- imports
def test_import_does_not_pull_in_training_dependencies():
    code = ("import sys, vqct_tokenizer\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('nltk', 'transformers', 'sentence_transformers')\n"
            "         or m.startswith(('vqct_tokenizer.training', 'vqct_tokenizer.codebook', 'vqct_tokenizer.evaluation',\n"
            "                          'vqct_tokenizer.generation'))]\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
