"""Half-precision, sharded weights: save_pretrained(dtype=..., max_shard_bytes=...), loading them
(upcast to float32), the shard index's checks, and export_half of a training checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_tokenizer, tiny_train_overrides, write_tiny_images, write_tiny_prior
from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.errors import WeightsError
from vqct_tokenizer.model_files import read_weights, save_sharded, weights_file
from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.export import export_half, load_train_state, model_from_checkpoint
from vqct_tokenizer.training.model import build_model
from vqct_tokenizer.training.trainer import train

KIB = 1024


def _half_copy(tok: VQCTTokenizer, keep: tuple[str, ...] = ("codebook",)) -> VQCTTokenizer:
    """``tok`` with every floating tensor rounded through float16 except those in ``keep``."""
    other = make_tokenizer()
    other.load_state_dict({k: v if any(k == p or k.startswith(p + ".") for p in keep) else v.half().float()
                           for k, v in tok.state_dict().items()})
    return other


def test_fp16_shards_stay_under_the_limit_and_load_as_float32(tmp_path, rgb):
    tok = make_tokenizer(seed=3)
    tok.save_pretrained(tmp_path / "m", dtype=torch.float16, max_shard_bytes=24 * KIB)
    shards = sorted((tmp_path / "m").glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and not (tmp_path / "m" / "model.safetensors").exists()
    assert all(f.stat().st_size <= 24 * KIB for f in shards)
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tok.state_dict()) and set(index["weight_map"].values()) == {f.name for f in shards}
    stored = {k: v for f in shards for k, v in load_file(str(f)).items()}
    assert stored["codebook"].dtype == torch.float32  # the tie-sensitive table stays exact
    assert stored["model.encoder.conv_in.weight"].dtype == torch.float16

    loaded = VQCTTokenizer.from_pretrained(tmp_path / "m")
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())
    expected = _half_copy(tok)
    for k, v in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert torch.equal(loaded.encode(rgb), expected.encode(rgb))


def test_keep_float32_keeps_a_module_exact(tmp_path, rgb):
    tok = make_tokenizer(seed=4)
    tok.save_pretrained(tmp_path / "m", dtype=torch.float16, keep_float32=("model.encoder", "model.quant_conv"))
    loaded = VQCTTokenizer.from_pretrained(tmp_path / "m")
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tok.state_dict().items() if k.startswith(("model.encoder.", "model.quant_conv.")))
    assert not torch.equal(state["model.decoder.conv_in.weight"], tok.state_dict()["model.decoder.conv_in.weight"])
    assert torch.equal(loaded.encode(rgb), tok.encode(rgb))  # the encoder decides the tokens


def test_saving_again_replaces_the_other_layout(tmp_path):
    tok = make_tokenizer()
    tok.save_pretrained(tmp_path / "m", max_shard_bytes=48 * KIB)
    first = {f.name for f in (tmp_path / "m").glob("model-*")}
    tok.save_pretrained(tmp_path / "m", dtype=torch.float16, max_shard_bytes=96 * KIB)  # fewer shards
    second = {f.name for f in (tmp_path / "m").glob("model-*")}
    assert len(second) < len(first) and not (first - second) & {f.name for f in (tmp_path / "m").iterdir()}
    tok.save_pretrained(tmp_path / "m")  # back to one file: no index or shard left to shadow it
    assert sorted(f.name for f in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]


def _sharded(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    make_tokenizer().save_pretrained(folder, dtype=torch.float16, max_shard_bytes=24 * KIB)
    return folder


def _edit_index(folder: Path, edit) -> None:
    path = folder / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    edit(index["weight_map"])
    path.write_text(json.dumps(index))


def test_index_may_not_point_outside_its_folder(tmp_path):
    folder = _sharded(tmp_path)
    _edit_index(folder, lambda m: m.update(codebook="../elsewhere.safetensors"))
    with pytest.raises(WeightsError, match="not a .safetensors file name"):
        VQCTTokenizer.from_pretrained(folder)


def test_missing_shard_is_named(tmp_path):
    folder = _sharded(tmp_path)
    victim = sorted(folder.glob("model-*"))[-1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        VQCTTokenizer.from_pretrained(folder)


def test_shard_holding_a_tensor_the_index_puts_elsewhere_is_refused(tmp_path):
    folder = _sharded(tmp_path)
    first, second = sorted(folder.glob("model-*"))[:2]
    moved = next(k for k, v in json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].items()
                 if v == first.name)
    _edit_index(folder, lambda m: m.update({moved: second.name}))
    with pytest.raises(WeightsError, match=f"{first.name} holds '{moved}', which .* maps to another shard"):
        VQCTTokenizer.from_pretrained(folder)


def test_wrong_shapes_in_shards_are_found_before_the_model_is_built(tmp_path):
    folder = _sharded(tmp_path)
    shard = folder / json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]["codebook"]
    state = load_file(str(shard))
    state["codebook"] = torch.zeros(3, 8)
    save_file(state, str(shard))
    with pytest.raises(WeightsError, match="wrong shapes codebook"):
        VQCTTokenizer.from_pretrained(folder)


def test_fp16_overflow_and_oversized_tensor_are_errors(tmp_path):
    with pytest.raises(WeightsError, match="w has values beyond the range of torch.float16"):
        save_sharded({"w": torch.tensor([1e5, 1.0])}, tmp_path)
    with pytest.raises(WeightsError, match="big alone needs 131,.* bytes, more than a shard of 65,536 bytes"):
        save_sharded({"big": torch.zeros(64, 1024)}, tmp_path, max_shard_bytes=64 * KIB)  # 128 KiB in fp16
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_sharded_repo_loads_offline_from_the_hub_cache(tmp_path, monkeypatch, rgb):
    import huggingface_hub.constants
    from test_tokenizer import make_hub_cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    folder = _sharded(tmp_path)
    make_hub_cache(tmp_path / "hub", "vqct-test/sharded", folder, files=[f.name for f in folder.iterdir()])
    loaded = VQCTTokenizer.from_pretrained("vqct-test/sharded", cache_dir=tmp_path / "hub")
    assert torch.equal(loaded.encode(rgb), VQCTTokenizer.from_pretrained(folder).encode(rgb))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("half-run")
    prior, images = write_tiny_prior(tmp / "prior"), write_tiny_images(tmp / "images")
    train(load_config(None, tiny_train_overrides(prior, images, tmp / "run")))
    return tmp / "run"


def test_export_half_tokenizer_and_train_state(trained_run, tmp_path):
    keep = ("autoencoder.encoder", "autoencoder.quant_conv")
    written = export_half(trained_run, tmp_path / "out", max_shard_bytes=48 * KIB, keep_float32=keep)
    assert all(f.stat().st_size <= 48 * KIB for files in written.values() for f in files if f.suffix == ".safetensors")
    model = model_from_checkpoint(trained_run)
    tok = VQCTTokenizer.from_pretrained(tmp_path / "out" / "tokenizer")
    x = torch.rand(4, 3, 16, 16)
    # encoder and codebook stored exactly: the tokens of the training model itself
    assert torch.equal(tok.encode(x), model.encode_ids(x * 2 - 1))
    assert tok.config.extra["provenance"]["step"] == 3

    state = load_train_state(tmp_path / "out" / "train-state")
    ckpt = torch.load(sorted(trained_run.glob("ckpt_*.pt"))[-1], weights_only=True)
    assert state["step"] == 3 and state["config"] == ckpt["config"]
    assert state["model"].keys() == ckpt["model"].keys() and state["discriminator"].keys() == ckpt["discriminator"].keys()
    for k, v in ckpt["model"].items():
        exact = k.startswith(tuple(p + "." for p in keep)) or not v.is_floating_point()
        assert torch.equal(state["model"][k], v if exact else v.half().float()), k
    fresh = build_model(state["config"], prior_dir=trained_run / "prior")
    fresh.load_state_dict(state["model"], strict=True)  # a warm start needs nothing else


def test_weights_file_names_both_layouts_when_neither_is_there(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
        weights_file(tmp_path)
    save_sharded({"a": torch.ones(2), "n": torch.arange(3)}, tmp_path, max_shard_bytes=None)
    state = read_weights(weights_file(tmp_path))
    assert state["a"].dtype == torch.float32 and state["n"].dtype == torch.int64  # integers stay integers


def test_cli_export_writes_half_precision_shards(trained_run, tmp_path):
    from vqct_tokenizer.cli import main

    out = tmp_path / "exported"
    assert main(["export", str(trained_run), "-o", str(out), "--dtype", "fp16", "--max-shard-mib", str(48 / 1024),
                 "--keep-float32", "model.encoder", "model.quant_conv"]) == 0
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and all(f.stat().st_size <= 48 * KIB for f in shards)
    stored = {k: v for f in shards for k, v in load_file(str(f)).items()}
    assert stored["model.decoder.conv_in.weight"].dtype == torch.float16
    assert stored["model.encoder.conv_in.weight"].dtype == torch.float32
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(VQCTTokenizer.from_pretrained(out).encode(x), model_from_checkpoint(trained_run).encode_ids(x * 2 - 1))
    assert main(["export", str(trained_run), "-o", str(tmp_path / "bad"), "--max-shard-mib", "0"]) == 2
