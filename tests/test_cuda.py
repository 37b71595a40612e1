"""On a CUDA GPU: bf16 training steps, GPU-vs-CPU tokens of the shipped default, a one-process NCCL
torchrun step, and a GPU-trained checkpoint exported and used on the CPU.

Run with ``pytest -m cuda`` on a machine with a GPU (benchmarks/gpu_job.py does, on a lent device);
everywhere else these tests are skipped. ``VQCT_GPU_TEST_MODEL`` may name the default model's folder
(the device job carries it as float16 shards) and ``VQCT_GPU_TEST_IMAGES`` a folder or list of
photos; without them the shipped model and ../shared/data/open/test.txt are used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_train_overrides, write_tiny_images, write_tiny_prior
from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.defaults import DEFAULT_MODEL, find_shipped
from vqct_tokenizer.image_io import list_image_paths
from vqct_tokenizer.training.checkpoint import find_latest, load_checkpoint
from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.export import export_half
from vqct_tokenizer.training.model import build_model
from vqct_tokenizer.training.trainer import train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"vqct": [], "learned": ["codebook.source=learned"], "vq": ["codebook.quantizer=vq", "codebook.source=learned"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cuda")
    return write_tiny_prior(tmp / "prior"), write_tiny_images(tmp / "images")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bf16_training_step_keeps_codebook_and_distances_float32(variant, tiny, tmp_path):
    prior, images = tiny
    cfg = load_config(None, [*tiny_train_overrides(prior, images, tmp_path / "run"), *VARIANTS[variant],
                             "run.precision=bf16", "optim.steps=2", "run.ckpt_every=2"])
    model = build_model(cfg).cuda().train()
    x = torch.rand(4, 3, 16, 16, device="cuda") * 2 - 1
    with torch.autocast("cuda", dtype=torch.bfloat16):
        codebook = model.codebook()
        fwd = model(x)
    assert codebook.dtype == torch.float32, "the codebook (transfer network output) left float32 under autocast"
    assert fwd.latent.dtype == torch.bfloat16, "autocast did not reach the encoder: this step was not bf16"
    # the ids are the float32 nearest codes of the bf16 latent: bf16 distances would tie and flip some
    ref = model.autoencoder.quantizer.encode(fwd.latent.float(), codebook.detach().float())
    assert torch.equal(fwd.ids, ref)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}

    train(cfg)  # the trainer's own bf16 path on the GPU, GAN on from step 1
    state = load_checkpoint(find_latest(tmp_path / "run"))
    assert state["step"] == 2
    assert all(v.dtype == before[k].dtype for k, v in state["model"].items()), "parameters must stay float32"
    changed = [k for k, v in state["model"].items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, "two bf16 steps changed no parameter"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows) and rows[-1]["d"] > 0


def _default_model() -> Path:
    folder = os.environ.get("VQCT_GPU_TEST_MODEL")
    path = Path(folder) if folder else find_shipped(DEFAULT_MODEL)
    if path is None or not (path / "config.json").is_file():
        pytest.skip(f"the default model is not here (set VQCT_GPU_TEST_MODEL or keep weights/{DEFAULT_MODEL})")
    return path


def _photos(count: int) -> list[str]:
    source = os.environ.get("VQCT_GPU_TEST_IMAGES") or REPO.parent / "shared" / "data" / "open" / "test.txt"
    if not Path(source).exists():
        pytest.skip(f"no photos at {source} (set VQCT_GPU_TEST_IMAGES)")
    return [str(p) for p in list_image_paths(source)[:count]]


@pytest.fixture(scope="module")
def cpu_tokens() -> tuple[list[str], torch.Tensor]:
    photos = _photos(64)
    return photos, VQCTTokenizer.from_pretrained(_default_model()).encode(photos, batch_size=16)


@pytest.mark.parametrize("tf32", ["tf32-default", "tf32-off"])
def test_gpu_encode_matches_cpu_on_the_default_model(tf32, cpu_tokens):
    """PyTorch lets cuDNN run float32 convolutions in TF32 by default; "tf32-off" is IEEE float32."""
    photos, expected = cpu_tokens
    gpu = VQCTTokenizer.from_pretrained(_default_model(), device="cuda")
    flags = torch.backends.cudnn.flags(enabled=True, allow_tf32=False) if tf32 == "tf32-off" else _null()
    with flags:
        got = gpu.encode(photos, batch_size=16).cpu()
    same = (got == expected).float().mean().item()
    assert same >= 0.999, f"GPU tokens {same:.4%} identical to the CPU's ({tf32}); the bar is 99.9 %"


def _null():
    import contextlib

    return contextlib.nullcontext()


def test_one_process_nccl_torchrun_step(tiny, tmp_path):
    prior, images = tiny
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "vqct_tokenizer",
           "train", "--config", "open-f8", *tiny_train_overrides(prior, images, out), "optim.steps=2",
           "run.ckpt_every=2", "run.precision=bf16"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "TORCH_DISTRIBUTED_DEBUG": "DETAIL", "TQDM_DISABLE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "device cuda:0 x1" in res.stdout  # the header: one rank, on the GPU (the NCCL backend)
    assert load_checkpoint(out)["step"] == 2


def test_gpu_trained_checkpoint_exports_and_decodes_on_cpu(tiny, tmp_path):
    prior, images = tiny
    train(load_config(None, [*tiny_train_overrides(prior, images, tmp_path / "run"), "run.precision=bf16"]))
    ckpt = load_checkpoint(find_latest(tmp_path / "run"))
    assert all(v.device.type == "cpu" for v in ckpt["model"].values())  # map_location: readable without a GPU
    export_half(tmp_path / "run", tmp_path / "out", max_shard_bytes=48 * 1024,
                keep_float32=("autoencoder.encoder", "autoencoder.quant_conv"))
    tok = VQCTTokenizer.from_pretrained(tmp_path / "out" / "tokenizer", device="cpu")
    x = torch.rand(2, 3, 16, 16)
    tokens = tok.encode(x)
    image = tok.decode(tokens, output_type="pt")
    assert image.shape == (2, 3, 16, 16) and image.device.type == "cpu" and torch.isfinite(image).all()
    # the GPU-trained model's own tokens, on the CPU: the float32 encoder came back exactly
    model = build_model(ckpt["config"], prior_dir=tmp_path / "run" / "prior")
    model.load_state_dict(ckpt["model"])
    assert torch.equal(model.eval().encode_ids(x * 2 - 1), tokens)
