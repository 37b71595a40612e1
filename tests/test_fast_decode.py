"""The decoder precision (issue 22's CPU speed): ``decode_precision`` "auto" | "fp32" | "bf16"."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from vqct_tokenizer import VQCTTokenizer, fast_decode
from vqct_tokenizer.cli import main
from vqct_tokenizer.fast_decode import DECODE_PRECISIONS, resolve_decode_precision

from conftest import make_tokenizer, random_rgb


@pytest.fixture
def images() -> list[np.ndarray]:
    return [random_rgb(40, 48, seed=s) for s in range(4)]


def fresh(model_dir, **kwargs) -> VQCTTokenizer:
    return VQCTTokenizer.from_pretrained(model_dir, **kwargs)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("fast_cpu", [True, False])
def test_auto_is_bf16_only_for_a_float32_model_on_hardware_with_native_bf16(monkeypatch, fast_cpu):
    monkeypatch.setattr(fast_decode, "cpu_has_fast_bf16", lambda: fast_cpu)
    cpu = torch.device("cpu")
    assert resolve_decode_precision("auto", cpu, torch.float32) == ("bf16" if fast_cpu else "fp32")
    for dtype in (torch.float16, torch.bfloat16, torch.float64):  # a model loaded in another dtype runs as loaded
        assert resolve_decode_precision("auto", cpu, dtype) == "fp32"
    for explicit in ("fp32", "bf16"):
        assert resolve_decode_precision(explicit, cpu, torch.float32) == explicit


def test_bad_decode_precision_is_a_value_error_naming_the_choices(model_dir, images):
    tok = fresh(model_dir)
    tokens = tok.encode(images)
    with pytest.raises(ValueError, match="decode precision must be one of 'auto', 'fp32', 'bf16', got 'fp16'"):
        tok.decode(tokens, precision="fp16")
    with pytest.raises(ValueError, match="decode precision"):
        tok.decode_precision = "half"
    with pytest.raises(ValueError, match="decode precision"):
        fresh(model_dir, decode_precision="float32")
    assert tok.decode_precision == "auto"


def test_fp32_decode_is_the_model_itself(model_dir, images):
    tok = fresh(model_dir, decode_precision="fp32")
    tokens = tok.encode(images)
    with torch.inference_mode():
        expected = tok.model.decode_ids(tokens, tok.codebook)
    got = tok.decode(tokens, output_type="pt")
    assert torch.allclose(got, ((expected + 1) / 2).clamp(0, 1), atol=1e-6)


def test_bf16_decode_runs_in_bfloat16_close_to_fp32(model_dir, images, monkeypatch):
    tok = fresh(model_dir)
    tokens = tok.encode(images)
    reference = tok.decode(tokens, output_type="np", precision="fp32")
    seen = []
    original = torch.nn.Conv2d.forward
    monkeypatch.setattr(torch.nn.Conv2d, "forward", lambda self, x: seen.append(x.dtype) or original(self, x))
    half = tok.decode(tokens, output_type="np", precision="bf16")
    assert seen and set(seen) == {torch.bfloat16}  # post_quant_conv and every decoder conv
    assert half.dtype == np.uint8 and half.shape == reference.shape
    assert not np.array_equal(half, reference)  # it really is another computation
    # measured on this tiny random model: 44-46 dB; vqct-open-f8 on photos: 57 dB, at most 2 levels
    assert psnr(half, reference) > 38


def test_tokens_do_not_depend_on_the_decode_precision(model_dir, images):
    tok = fresh(model_dir, decode_precision="bf16")
    assert torch.equal(tok.encode(images), fresh(model_dir, decode_precision="fp32").encode(images))


def test_bf16_copy_follows_weight_changes(model_dir, images, tmp_path):
    other = tmp_path / "other"
    make_tokenizer(seed=5).save_pretrained(other)
    tok = fresh(model_dir, decode_precision="bf16")
    tokens = tok.encode(images)
    before = tok.decode(tokens, output_type="np")
    tok.load_weights(other / "model.safetensors")
    np.testing.assert_array_equal(tok.decode(tokens, output_type="np"),
                                  fresh(other, decode_precision="bf16").decode(tokens, output_type="np"))
    with torch.no_grad():  # in place, as a training loop would
        tok.model.decoder.conv_out.bias.add_(0.25)
    shifted = tok.decode(tokens, output_type="pt")
    assert not np.array_equal(tok.decode(tokens, output_type="np"), before)
    assert torch.allclose(shifted, tok.decode(tokens, output_type="pt", precision="fp32"), atol=0.05)


def test_bf16_copy_stays_out_of_the_state_dict_pickle_and_saved_model(model_dir, images, tmp_path):
    tok = fresh(model_dir, decode_precision="bf16")
    keys = set(tok.state_dict())
    tokens = tok.encode(images)
    out = tok.decode(tokens, output_type="np")
    assert set(tok.state_dict()) == keys
    for clone in (copy.deepcopy(tok), pickle.loads(pickle.dumps(tok))):
        assert clone.decode_precision == "bf16"
        np.testing.assert_array_equal(clone.decode(tokens, output_type="np"), out)
    tok.save_pretrained(tmp_path / "saved")
    assert fresh(tmp_path / "saved").decode_precision == "auto"  # a runtime choice, not saved with the model


@pytest.mark.parametrize("precision", DECODE_PRECISIONS)
def test_cli_decode_precision_matches_python(model_dir, tmp_path, precision):
    from PIL import Image

    path = tmp_path / "in.png"
    Image.fromarray(random_rgb(40, 48, seed=0)).save(path)
    assert main(["reconstruct", str(path), "-o", str(tmp_path / "r.png"), "--model", str(model_dir),
                 "--decode-precision", precision, "--device", "cpu"]) == 0
    tok = fresh(model_dir, decode_precision=precision)
    expected = tok.reconstruct(str(path), resize=False, output_type="np")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png")), expected)


def test_cli_refuses_an_unknown_decode_precision(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["decode", str(tmp_path / "t.npy"), "-o", str(tmp_path / "o.png"), "--decode-precision", "fp16"])
    assert info.value.code == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_the_bf16_copy_does_not_inherit_hooks_of_the_model(model_dir, images):
    tok = fresh(model_dir, decode_precision="bf16")
    tokens = tok.encode(images)
    calls = []
    handle = tok.model.decoder.conv_out.register_forward_hook(lambda *a: calls.append(1))
    tok.decode(tokens)  # builds the copy while the hook is on the model
    handle.remove()
    tok.decode(tokens)
    assert calls == []
    tok.decode(tokens, precision="fp32")  # the model itself: hooks removed there stay removed
    assert calls == []
