"""The prepared device job (benchmarks/gpu_job.py), run whole on the CPU with a tiny model and a
tiny budget: what comes back fits the device's limits, loads and decodes."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tokenizer, tiny_train_overrides, write_tiny_images, write_tiny_prior
from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.training.export import load_train_state

REPO = Path(__file__).resolve().parents[1]
KIB = 1024


def _gpu_job():
    spec = importlib.util.spec_from_file_location("gpu_job", REPO / "benchmarks" / "gpu_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cpu_dry_run_of_the_whole_job(tmp_path):
    gpu_job = _gpu_job()
    prior, images = write_tiny_prior(tmp_path / "prior"), write_tiny_images(tmp_path / "images")
    model = tmp_path / "model"
    make_tokenizer().save_pretrained(model, dtype=torch.float16, max_shard_bytes=24 * KIB)
    tiny = tiny_train_overrides(prior, images, tmp_path / "ignored")
    # a ceiling, not a target: on a loaded machine each child spends long seconds importing torch,
    # and what is tested here is what comes back, not how fast (phases skipped for time: next test)
    out, budget = tmp_path / "OUT", 1800
    rc = gpu_job.main([
        "job", "--out", str(out), "--work", str(tmp_path / "work"), "--allow-cpu", "--budget-s", str(budget),
        "--cap-s", "env=300,throughput=600,encode=600",
        "--phases", "env,throughput,encode,train,export", "--images", str(images), "--workers", "0",
        "--batch", "4", "--log-every", "1",
        "--throughput-set", *tiny, "--throughput-steps", "2", "--throughput-setups", "data,fp32",
        "--encode-model", str(model), "--encode-images", "6", "--encode-batch", "3", "--encode-repeats", "1",
        "--encode-paths", "ours-fp32,diffusers-fp32",
        "--train-set", *tiny, "--train-minutes", "0.2", "--min-train-s", "10", "--train-startup-s", "30",
        "--export-s", "20", "--shard-mib", str(96 * KIB / 2**20)])
    assert rc == 0

    # what comes back: the device's limits on $OUT
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) <= gpu_job.RETURN_FILES
    assert sum(f.stat().st_size for f in files) <= gpu_job.RETURN_BYTES
    for f in files:
        rel = f.relative_to(out)
        assert len(rel.parts) <= 3 and all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts), rel
        assert f.stat().st_size <= (96 * KIB if f.suffix == ".safetensors" else gpu_job.RETURN_FILE_BYTES), rel
    names = {str(f.relative_to(out)) for f in files}
    assert {"job.log", "results.tar.gz"} <= names
    assert len([n for n in names if n.startswith("tokenizer/")]) >= 2  # sharded at 96 KiB
    assert any(n.startswith("train-state/") for n in names)

    with tarfile.open(out / "results.tar.gz") as tar:
        summary = json.load(tar.extractfile("results/gpu_job.json"))
        throughput = json.load(tar.extractfile("results/gpu_train_throughput.json"))
        encode = json.load(tar.extractfile("results/gpu_encode_throughput.json"))
    assert {k: v["status"] for k, v in summary["phases"].items()} == dict.fromkeys(
        ["env", "throughput", "encode", "train", "export"], "ok")
    assert summary["elapsed_s"] <= budget
    assert throughput["setups"]["fp32"]["img_per_s"] > 0 and throughput["setups"]["data"]["img_per_s"] > 0
    paths = encode["paths"]
    assert paths["ours-fp32-ieee"]["identical_tokens"] == 1.0  # the reference against itself
    assert paths["ours-fp32"]["identical_tokens"] == 1.0      # on a CPU, TF32 does not exist
    if importlib.util.find_spec("diffusers") is not None:     # the same network, another implementation
        assert paths["diffusers-fp32"]["identical_tokens"] >= 0.99 and encode["goal"] is not None

    # here, after the call: unpack, then the tokenizer and the warm-start state load and work
    gpu_job.main(["unpack", str(out), "--into", str(tmp_path / "back"), "--results-dir", str(tmp_path / "results")])
    assert (tmp_path / "results" / "gpu_train.json").is_file()
    tok = VQCTTokenizer.from_pretrained(tmp_path / "back" / "tokenizer")
    image = tok.decode(tok.encode(torch.rand(2, 3, 16, 16)), output_type="pt")
    assert image.shape == (2, 3, 16, 16) and torch.isfinite(image).all()
    state = load_train_state(tmp_path / "back" / "train-state")
    assert state["step"] == json.loads((tmp_path / "results" / "gpu_train.json").read_text())["step"] > 0
    assert {"model", "discriminator"} <= set(state)


def test_phases_without_time_left_are_skipped_and_say_so(tmp_path):
    gpu_job = _gpu_job()
    out = tmp_path / "OUT"
    # the export's reserve (60 s) is more than the whole budget: training must not start
    assert gpu_job.main(["job", "--out", str(out), "--work", str(tmp_path / "work"), "--allow-cpu", "--budget-s", "30",
                         "--phases", "env,train,export"]) == 0
    with tarfile.open(out / "results.tar.gz") as tar:
        phases = json.load(tar.extractfile("results/gpu_job.json"))["phases"]
    assert phases["env"]["status"] == "ok"
    assert phases["train"]["status"] == "skipped" and "left for it" in phases["train"]["why"]
    assert phases["export"]["status"] == "error" and "no checkpoint" in phases["export"]["error"]
    assert "train: skipped" in (out / "job.log").read_text()


def test_return_plan_keeps_whole_groups_within_the_limits(tmp_path):
    gpu_job = _gpu_job()

    def files(name: str, sizes: list[int]) -> list[Path]:
        paths = []
        for i, size in enumerate(sizes):
            (tmp_path / f"{name}{i}.safetensors").write_bytes(b"\0" * size)
            paths.append(tmp_path / f"{name}{i}.safetensors")
        return [*paths, tmp_path / f"{name}.json"]  # small files ride in results.tar.gz

    mib = gpu_job.MIB
    written = {"tokenizer": files("t", [15 * mib, 15 * mib]), "train-state": files("s", [15 * mib, 15 * mib, 4 * mib])}
    assert gpu_job.plan_return(written, 2, 2 * mib) == (["tokenizer"], ["train-state"])  # 66 MiB would not fit
    written["train-state"] = files("s", [15 * mib, 1 * mib])
    assert gpu_job.plan_return(written, 2, 2 * mib) == (["tokenizer", "train-state"], [])
    assert gpu_job.plan_return(written, 5, 0) == (["tokenizer"], ["train-state"])  # 9 files would be too many


def test_photos_are_reencoded_at_the_best_quality_that_fits(tmp_path):
    gpu_job = _gpu_job()
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        smooth = np.kron(rng.integers(0, 255, size=(12, 16, 3)), np.ones((8, 8, 1)))
        Image.fromarray(np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)).save(src / f"{i}.png")

    def size_at(q: int) -> int:
        total = 0
        for f in sorted(src.iterdir()):
            buf = io.BytesIO()
            Image.open(f).convert("RGB").save(buf, "JPEG", quality=q)
            total += gpu_job._carried(len(buf.getvalue()))  # as the budget counts: tar headers and padding
        return total

    originals = sum(gpu_job._carried(f.stat().st_size) for f in src.iterdir())
    assert originals > size_at(90)  # PNGs: re-encoding is what makes them fit below
    same = gpu_job._pack_photos(src, tmp_path / "a", originals, [90, 70, 50])
    assert same["quality"] == "original" and same["count"] == 6
    assert sorted(f.read_bytes() for f in (tmp_path / "a").iterdir()) == sorted(f.read_bytes() for f in src.iterdir())
    tight = gpu_job._pack_photos(src, tmp_path / "b", (size_at(70) + size_at(90)) // 2, [90, 70, 50])
    assert tight["quality"] == 70 and tight["count"] == 6 and tight["bytes"] <= (size_at(70) + size_at(90)) // 2
    fewer = gpu_job._pack_photos(src, tmp_path / "c", size_at(50) // 2, [90, 70, 50])
    assert fewer["quality"] == 50 and 0 < fewer["count"] < 6 and fewer["bytes"] <= size_at(50) // 2
    assert [int(f.name[:5]) for f in sorted((tmp_path / "c").iterdir())] == list(range(fewer["count"]))
    assert tight["psnr_db"] > fewer["psnr_db"]  # the lower quality shows in the measured loss
    with pytest.raises(SystemExit, match="not one photo fits"):
        gpu_job._pack_photos(src, tmp_path / "d", 100, [90, 70, 50])
