"""The fast encoder paths (issue 14): ``precision="fast"`` (float32, channels-last, torch.compile) and
``precision="bf16"`` (bfloat16 trunk, float32 head), against the float32 reference path."""

from __future__ import annotations

import copy
import pickle
import shutil

import numpy as np
import pytest
import torch

import vqct_tokenizer.models.quantizer as quantizer_module
from vqct_tokenizer import VQCTTokenizer, fast_encode
from vqct_tokenizer.cli import main
from vqct_tokenizer.fast_encode import PRECISIONS

from conftest import ADJECTIVES, NOUNS, make_tokenizer, random_rgb

A, N, K = len(ADJECTIVES), len(NOUNS), 2
GRID = (8, 8, K + 1)  # resolution 32, f = 4


@pytest.fixture
def no_compile(monkeypatch):
    """The "fast" path without torch.compile (its eager fallback): same math, no compile time."""
    monkeypatch.setattr(fast_encode, "USE_COMPILE", False)


@pytest.fixture
def images() -> list[np.ndarray]:
    return [random_rgb(40, 48, seed=s) for s in range(8)]


def fresh(model_dir, **kwargs) -> VQCTTokenizer:
    """A tokenizer of its own (the session ``tok`` fixture must not be mutated)."""
    return VQCTTokenizer.from_pretrained(model_dir, **kwargs)


# ------------------------------------------------------------------------------------ the option
def test_default_precision_is_fp32_and_the_reference_path_is_unchanged(model_dir, images):
    tok = fresh(model_dir)
    assert tok.precision == "fp32"
    x = torch.stack(tok.preprocess(images)[0])
    with torch.inference_mode():
        expected = tok.model.encode_ids(x, tok.codebook)
    assert torch.equal(tok.encode(images), expected)
    assert torch.equal(tok.encode(images, precision="fp32"), expected)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_round_trips_through_from_pretrained(model_dir, precision):
    tok = fresh(model_dir, precision=precision)
    assert tok.precision == precision
    tok.precision = "fp32"
    assert tok.precision == "fp32"


def test_bad_precision_is_a_value_error(model_dir, rgb):
    with pytest.raises(ValueError, match="precision must be one of"):
        fresh(model_dir, precision="fp16")
    tok = fresh(model_dir)
    with pytest.raises(ValueError, match="precision must be one of"):
        tok.precision = "bfloat16"
    with pytest.raises(ValueError, match="precision must be one of"):
        tok.encode(rgb, precision="int8")
    assert tok.precision == "fp32"


def test_per_call_precision_does_not_change_the_tokenizer(model_dir, rgb):
    tok = fresh(model_dir, precision="bf16")
    tok.encode(rgb, precision="fp32")
    assert tok.precision == "bf16"


# ------------------------------------------------------------------------------- same contract
@pytest.mark.parametrize("precision", ["fast", "bf16"])
def test_fast_paths_return_the_same_shapes_dtypes_and_id_ranges(model_dir, images, rgb, precision, no_compile):
    tok = fresh(model_dir, precision=precision)
    ref = tok.encode(images, precision="fp32")
    out = tok.encode(images)
    assert out.dtype == ref.dtype == torch.long and out.shape == ref.shape == (len(images), *GRID)
    assert ((out[..., :K] >= 0) & (out[..., :K] < A)).all() and ((out[..., K] >= A) & (out[..., K] < A + N)).all()
    single = tok.encode(rgb)
    assert single.dtype == torch.long and tuple(single.shape) == GRID
    # native sizes, mixed: a list of grids, as on the reference path
    mixed = [random_rgb(40, 48), random_rgb(36, 20, seed=3)]
    grids = tok.encode(mixed, resize=False)
    reference = tok.encode(mixed, resize=False, precision="fp32")
    assert [tuple(g.shape) for g in grids] == [tuple(g.shape) for g in reference]


@pytest.mark.parametrize("precision", ["fast", "bf16"])
def test_the_quantizer_gets_float32_latents_and_codes_outside_autocast(model_dir, images, precision, monkeypatch,
                                                                       no_compile):
    seen = []
    real = quantizer_module.nearest_codes

    def spy(z, codes, k):
        seen.append((z.dtype, codes.dtype, torch.is_autocast_enabled("cpu")))
        return real(z, codes, k)

    monkeypatch.setattr(quantizer_module, "nearest_codes", spy)
    tok = fresh(model_dir)
    tok.encode(images, precision=precision)
    assert seen and all(s == (torch.float32, torch.float32, False) for s in seen), seen


def test_a_bf16_model_still_quantizes_in_float32_on_the_fast_paths(model_dir, images, monkeypatch, no_compile):
    """``dtype=torch.bfloat16`` keeps working; the fast paths build float32 (head) copies of it."""
    seen = []
    real = quantizer_module.nearest_codes
    monkeypatch.setattr(quantizer_module, "nearest_codes",
                        lambda z, codes, k: seen.append(z.dtype) or real(z, codes, k))
    tok = fresh(model_dir, dtype=torch.bfloat16)
    assert tok.dtype == torch.bfloat16
    assert tok.encode(images).shape == (len(images), *GRID)  # the existing bf16-weights path
    seen.clear()
    for precision in ("fast", "bf16"):
        assert tok.encode(images, precision=precision).shape == (len(images), *GRID)
    assert seen and set(seen) == {torch.float32}


def test_bf16_path_really_runs_the_trunk_in_bfloat16_and_the_head_in_float32(model_dir, images):
    tok = fresh(model_dir)
    tok.encode(images, precision="bf16")
    module = tok._fast._runners["bf16"].module  # a FastEncoder
    dtypes = {}

    def hook(name):
        return lambda mod, args, out: dtypes.__setitem__(name, (args[0].dtype, out.dtype))

    hooks = [m.register_forward_hook(hook(name))
             for name, m in [("conv_in", module.encoder.conv_in), ("conv_out", module.encoder.conv_out),
                             ("quant_conv", module.quant_conv)]]
    tok.encode(images, precision="bf16")
    for h in hooks:
        h.remove()
    assert dtypes["conv_in"] == (torch.bfloat16, torch.bfloat16)
    assert dtypes["conv_out"] == (torch.float32, torch.float32)
    assert dtypes["quant_conv"] == (torch.float32, torch.float32)
    assert tok.model.encoder.conv_in.weight.dtype == torch.float32  # the model itself is untouched


# --------------------------------------------------------------------------------- agreement
def agreement(tok, images, precision) -> float:
    ref = tok.encode(images, precision="fp32")
    return (tok.encode(images, precision=precision) == ref).float().mean().item()


def test_fast_path_eager_fallback_agrees_with_fp32(model_dir, images, no_compile):
    assert agreement(fresh(model_dir), images, "fast") > 0.99


def test_bf16_path_agrees_with_fp32_on_most_tokens(model_dir, images):
    share = agreement(fresh(model_dir), images, "bf16")
    assert share > 0.9, share


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler for inductor")
def test_compiled_fast_path_agrees_with_fp32_and_does_not_fall_back(model_dir, images, recwarn):
    tok = fresh(model_dir, precision="fast")
    share = agreement(tok, images, "fast")
    assert share > 0.99, share
    runner = tok._fast._runners["fast"]
    assert runner.compiled is not None, [str(w.message) for w in recwarn]
    assert not [w for w in recwarn if "torch.compile of the fast encoder failed" in str(w.message)]


def test_compile_failure_falls_back_to_eager_with_a_warning(model_dir, images, monkeypatch):
    def broken_compile(module, **kwargs):
        def call(x):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(fast_encode, "USE_COMPILE", True)
    tok = fresh(model_dir)
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        out = tok.encode(images, precision="fast")
    assert (out == tok.encode(images)).float().mean().item() > 0.99


# ------------------------------------------------------------------------------------- the cache
def test_fast_copies_follow_weight_changes(model_dir, images, tmp_path, no_compile):
    other = tmp_path / "other"
    make_tokenizer(seed=5).save_pretrained(other)
    tok = fresh(model_dir)
    before = tok.encode(images, precision="bf16")
    tok.load_weights(other / "model.safetensors")
    assert torch.equal(tok.encode(images, precision="bf16"), fresh(other).encode(images, precision="bf16"))
    assert not torch.equal(tok.encode(images, precision="bf16"), before)
    fast_before = tok.encode(images, precision="fast")
    with torch.no_grad():  # in place, as a training loop would
        tok.model.quant_conv.bias.add_(0.5)
    fast_after = tok.encode(images, precision="fast")
    assert not torch.equal(fast_after, fast_before)
    assert (fast_after == tok.encode(images, precision="fp32")).float().mean().item() > 0.99


def test_fast_copies_stay_out_of_the_state_dict_pickle_and_copies(model_dir, images, tmp_path, no_compile):
    tok = fresh(model_dir, precision="bf16")
    keys = set(tok.state_dict())
    out = tok.encode(images)
    assert set(tok.state_dict()) == keys
    for clone in (copy.deepcopy(tok), pickle.loads(pickle.dumps(tok))):
        assert clone.precision == "bf16" and torch.equal(clone.encode(images), out)
    tok.save_pretrained(tmp_path / "saved")
    assert fresh(tmp_path / "saved").precision == "fp32"  # a runtime choice, not saved with the model


def test_decode_is_the_same_whatever_the_precision(model_dir, images, no_compile):
    tok = fresh(model_dir)
    tokens = tok.encode(images)
    expected = tok.decode(tokens, output_type="np")
    tok.precision = "bf16"
    np.testing.assert_array_equal(tok.decode(tokens, output_type="np"), expected)


# ----------------------------------------------------------------------------------------- CLI
def test_encode_dataset_precision_option(model_dir, tmp_path, capsys):
    from PIL import Image

    from vqct_tokenizer import load_token_dataset

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(random_rgb(40, 48, seed=i)).save(folder / f"img{i}.png")
    out = tmp_path / "tokens"
    assert main(["encode-dataset", str(folder), "-o", str(out), "--model", str(model_dir), "--precision", "bf16",
                 "--device", "cpu", "--workers", "0", "--no-progress"]) == 0
    ds = load_token_dataset(out)
    tok = fresh(model_dir)
    for name in ds.paths:
        assert torch.equal(ds[name], tok.encode(str(folder / name), precision="bf16"))
    with pytest.raises(SystemExit):
        main(["encode-dataset", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--precision {fp32,fast,bf16}" in help_text and "default: fp32" in help_text
