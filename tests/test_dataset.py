"""``vqct encode-dataset`` and ``load_token_dataset``: shards, manifest, reader, resuming, kill -9, torchrun."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqct_tokenizer import VQCTConfig, VQCTTokenizer, load_token_dataset
from vqct_tokenizer.cli import main
from vqct_tokenizer.dataset import SHARD_SLEEP_ENV, encode_dataset, list_inputs
from vqct_tokenizer.tokens import read_token_file

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def tiny_tokenizer(seed: int = 0, **overrides) -> VQCTTokenizer:
    """resolution 16, f = 2: an 8x8 grid of 3 ids (2 adjectives of 6, 1 noun of 9); random weights."""
    fields = dict(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8,
                  codebook_dim=4, norm_groups=4, num_adjectives=6, num_nouns=9)
    fields.update(overrides)
    torch.manual_seed(seed)
    tok = VQCTTokenizer(VQCTConfig(**fields))
    with torch.no_grad():
        tok.codebook.copy_(torch.randn(tok.codebook.shape, generator=torch.Generator().manual_seed(seed + 1)))
    return tok


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tok(model) -> VQCTTokenizer:
    return VQCTTokenizer.from_pretrained(model)


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Images of varied sizes, some in a sub-folder, named so that sorted order interleaves them."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / ("sub" if i % 3 == 1 else "") / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = 14 + (i * 5) % 13, 16 + (i * 7) % 11
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """11 good images and one text file renamed .png."""
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, 11)
    (folder / "img05b.png").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def reference(images, tok, tmp_path_factory) -> Path:
    """An uninterrupted single-process run: the output every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "out"
    encode_dataset(images, out, tok, shard_size=2, batch_size=2, workers=0, progress=False)
    return out


def assert_same_output(a: Path, b: Path) -> None:
    """Same images, failures and token grids, each image exactly once."""
    da, db = load_token_dataset(a), load_token_dataset(b)
    assert db.paths == da.paths and len(set(db.paths)) == len(db.paths)
    assert [(f["path"], f["error"]) for f in db.failures] == [(f["path"], f["error"]) for f in da.failures]
    assert db.manifest["counts"] == da.manifest["counts"]
    for (pa, ta), (pb, tb) in zip(da.items(), db.items()):
        assert pa == pb and torch.equal(ta, tb), f"tokens of {pa} differ"


# ---------------------------------------------------------------------------------------- output and reader
def test_output_manifest_and_reader(images, tok, reference):
    ds = load_token_dataset(reference)
    root, files = list_inputs(images)
    good = [f for f in files if f != "img05b.png"]
    assert len(ds) == 11 and ds.paths == good
    m = ds.manifest
    assert m["config_hash"] == tok.config.architecture_hash() and m["counts"] == {
        "inputs": 12, "encoded": 11, "failed": 1, "shards": 6}
    assert m["layout"]["slots"] == ["adjective", "adjective", "noun"] and m["layout"]["grid"] == [8, 8]
    assert (m["precision"], m["refine_steps"]) == ("fp32", 0)
    assert m["layout"]["groups"][1] == {"name": "noun", "k": 1, "id_range": [6, 15]}
    assert [f["path"] for f in ds.failures] == ["img05b.png"] and "not a readable image" in ds.failures[0]["error"]
    # tokens are exactly those of the tokenizer, stored compactly
    expected = tok.encode([str(root / f) for f in good])
    assert torch.equal(torch.stack(list(ds)), expected)
    assert ds[3].dtype == torch.int64 and torch.equal(ds[-1], expected[-1])
    from safetensors.numpy import load_file
    assert load_file(str(reference / "shard-00000.safetensors"))["tokens"].dtype == np.int16
    # by source path: as listed, or the file's own path
    assert torch.equal(ds["sub/img01.png"], ds[good.index("sub/img01.png")])
    assert torch.equal(ds[images / "img02.png"], ds[good.index("img02.png")])
    assert ds.image_size("img00.png") == (14, 16)
    entry = next(e for e in m["images"] if e["path"] == "sub/img01.png")
    assert set(entry) == {"index", "path", "size", "shard", "row"}
    with pytest.raises(KeyError, match="could not be encoded"):
        ds["img05b.png"]
    with pytest.raises(KeyError, match="not in"):
        ds["nope.png"]
    with pytest.raises(IndexError):
        ds[11]


def test_cli_with_a_list_file_workers_and_native_size(images, tok, model, tmp_path):
    listing = images / "lists" / "some.txt"
    listing.parent.mkdir(exist_ok=True)
    names = ["../img03.png", "../sub/img04.png", "../missing.png", "../img00.png"]
    listing.write_text("# a comment\n" + "\n".join(names) + "\n\n")
    out = tmp_path / "native"
    assert main(["encode-dataset", str(listing), "-o", str(out), "--model", str(model), "--native",
                 "--shard-size", "3", "--batch-size", "2", "--workers", "1", "--no-progress"]) == 0
    ds = load_token_dataset(out)
    assert ds.paths == ["../img03.png", "../sub/img04.png", "../img00.png"]
    assert ds.failures[0]["path"] == "../missing.png" and "not found" in ds.failures[0]["error"]
    assert ds.manifest["layout"]["grid"] is None and ds.layout == tok.config.token_layout(None)
    for name in ds.paths:
        tokens, size = tok.encode(str(listing.parent / name), resize=False, return_image_sizes=True)
        assert torch.equal(ds[name], tokens) and ds.image_size(name) == size
    # and the grids decode back to the original size
    h, w = ds.image_size(0)
    assert tok.decode(ds[0], image_size=(h, w)).size == (w, h)


@pytest.mark.parametrize("suffix", [".json", ".pt"])
def test_cli_token_files_and_dataset_shards_share_one_layout(images, tok, model, reference, tmp_path, suffix):
    """`vqct encode` and `vqct encode-dataset` record the same layout, from VQCTConfig.token_layout."""
    ds = load_token_dataset(reference)
    root, files = list_inputs(images)
    out = tmp_path / f"t{suffix}"
    assert main(["encode", str(root / files[0]), str(root / files[2]), "-o", str(out), "--model", str(model)]) == 0
    raw = json.loads(out.read_text()) if suffix == ".json" else torch.load(out, weights_only=True)
    assert raw["layout"] == ds.manifest["layout"] == tok.config.token_layout((8, 8))
    assert read_token_file(out).layout == ds.layout
    # the token file opens as a dataset too, with the tokens of the shards
    file_ds = load_token_dataset(out)
    assert file_ds.layout == ds.layout and file_ds.config_hash == ds.config_hash
    assert torch.equal(file_ds[1], ds[files[2]]) and torch.equal(file_ds[str(root / files[0])], ds[files[0]])


def test_manifest_written_before_the_shared_layout_still_loads(reference, tmp_path):
    """Manifests of earlier versions also recorded layout.dtype; they read as before."""
    out = tmp_path / "old"
    shutil.copytree(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["layout"]["dtype"] = "int16"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert_same_output(reference, out)


def test_missing_manifest_is_a_clear_error(tmp_path, images, tok):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_token_dataset(tmp_path)
    out = tmp_path / "out"
    encode_dataset(images, out, tok, shard_size=4, workers=0, progress=False)
    (out / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="rerun encode-dataset"):
        load_token_dataset(out)


def test_refined_dataset_holds_encode_refine_tokens_and_lists_tiled_images_as_failures(images, tok, tmp_path):
    small_tiles = copy.deepcopy(tok)
    small_tiles.tile_size = 20  # images wider or taller than 20 px (padded) decode in tiles: not refinable
    out = tmp_path / "refined"
    encode_dataset(images, out, small_tiles, shard_size=4, batch_size=3, workers=0, progress=False, native=True,
                   refine_steps=4)
    ds = load_token_dataset(out)
    root, files = list_inputs(images)
    sizes = {f: Image.open(root / f).size for f in files if f != "img05b.png"}
    fits = [f for f, (w, h) in sizes.items() if max(-(-w // 2) * 2, -(-h // 2) * 2) <= 20]
    assert 0 < len(fits) < len(sizes), "the test needs refinable and tiled images both"
    assert ds.paths == fits and ds.manifest["refine_steps"] == 4
    too_large = {f["path"]: f["error"] for f in ds.failures if f["path"] != "img05b.png"}
    assert set(too_large) == set(sizes) - set(fits) and all("tile by tile" in e for e in too_large.values())
    for path, grid in ds.items():
        assert torch.equal(grid, small_tiles.encode(str(root / path), resize=False, refine_steps=4)), path
    plain = [small_tiles.encode(str(root / p), resize=False) for p in fits]
    assert any(not torch.equal(g, p) for (_, g), p in zip(ds.items(), plain)), "refinement changed no image"


# ---------------------------------------------------------------------------------------- resuming
def _stamps(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shard-*")}


def test_rerun_keeps_finished_shards_and_redoes_the_interrupted_one(images, tok, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = _stamps(out)
    again = encode_dataset(images, out, tok, shard_size=2, batch_size=2, workers=0, progress=False)
    assert (again.shards_written, again.shards_skipped) == (0, 6)
    assert _stamps(out) == before
    # an interrupted shard: tokens written, its JSON (the done-marker) not yet; plus a torn temp file
    (out / "shard-00003.json").unlink()
    (out / "manifest.json").unlink()
    (out / ".shard-00004.safetensors.abc.tmp").write_bytes(b"torn")
    again = encode_dataset(images, out, tok, shard_size=2, batch_size=2, workers=0, progress=False)
    assert (again.shards_written, again.shards_skipped) == (1, 5)
    assert not list(out.glob(".*.tmp"))
    after = _stamps(out)
    assert {k for k in after if after[k] != before.get(k)} == {"shard-00003.json", "shard-00003.safetensors"}
    assert_same_output(reference, out)


@pytest.mark.parametrize("change, message", [
    ("config", "config hash"),
    ("weights", "other weights"),
    ("shard-size", "--shard-size"),
    ("native", "--native"),
    ("inputs", "input list"),
    ("precision", "--precision"),
    ("refine", "--refine"),
])
def test_resume_refuses_a_different_model_or_settings(images, tok, reference, tmp_path, change, message):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    kwargs = dict(shard_size=2, batch_size=2, workers=0, progress=False)
    source, model = images, tok
    if change == "config":
        model = tiny_tokenizer(num_nouns=10)
    elif change == "weights":
        model = tiny_tokenizer(seed=7)
    elif change == "shard-size":
        kwargs["shard_size"] = 3
    elif change == "native":
        kwargs["native"] = True
    elif change == "precision":
        model = copy.deepcopy(tok)
        model.precision = "bf16"
    elif change == "refine":
        kwargs["refine_steps"] = 3
    else:
        source = tmp_path / "fewer"
        write_images(source, 3)
    before = _stamps(out)
    with pytest.raises(ValueError, match=message):
        encode_dataset(source, out, model, **kwargs)
    assert _stamps(out) == before


def test_kill_9_then_rerun_gives_every_image_once_with_identical_tokens(images, model, reference, tmp_path):
    """SIGKILL after the first shard is on disk (the run sleeps between shards), then the same command."""
    out = tmp_path / "out"
    args = ["encode-dataset", str(images), "-o", str(out), "--model", str(model), "--shard-size", "2",
            "--batch-size", "2", "--workers", "0", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "vqct_tokenizer", *args], env={**CHILD_ENV, SHARD_SLEEP_ENV: "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (out / "shard-00000.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no shard written within 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    first = _stamps(out)
    assert "shard-00000.safetensors" in first and "shard-00005.json" not in first
    assert main(args) == 0
    assert all(_stamps(out)[name] == stamp for name, stamp in first.items() if name.startswith("shard-00000"))
    assert_same_output(reference, out)


# ---------------------------------------------------------------------------------------- torchrun
def test_torchrun_two_ranks_gloo_gives_the_same_output(images, model, reference, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vqct_tokenizer", "encode-dataset", str(images), "-o", str(out), "--model", str(model),
           "--shard-size", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=CHILD_ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "11 image(s) encoded, 1 failed" in res.stdout
    assert_same_output(reference, out)
