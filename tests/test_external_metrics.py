"""rFID and LPIPS compute paths, run with tiny random stand-in networks.

pytorch-fid's Inception and lpips' VGG cannot be downloaded here, so ``evaluation/external.py``'s
meters are fed stand-ins injected through ``external.LOADERS`` that keep the real call conventions:
an "Inception" that returns ``[pooled features (B, F, 1, 1)]`` and an "LPIPS" with
``forward(in0, in1, normalize=...)`` returning (B, 1, 1, 1), built the way LPIPS is (unit-normalised
channels of a few conv layers, squared difference, spatial mean, non-negative channel weights,
summed over layers). The tests compare the meters with brute-force computations on the same features.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vqct_tokenizer.evaluation import external
from vqct_tokenizer.evaluation.evaluate import evaluate

from conftest import make_tokenizer, require


class TinyInception(nn.Module):
    """Stands in for pytorch_fid.inception.InceptionV3: [0, 1] RGB in, [(B, F, 1, 1)] out."""

    def __init__(self, dim: int = 12, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, dim, 3, 2, 1), nn.Tanh())
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        assert x.min() >= 0 and x.max() <= 1, "rFID network must get RGB in [0, 1] (Inception normalises itself)"
        self.inputs.append(x.detach().clone())
        return [F.adaptive_avg_pool2d(self.body(x), 1)]


class TinyLPIPS(nn.Module):
    """Stands in for lpips.LPIPS: LPIPS' formula over two random conv layers."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.layers = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1), nn.ReLU()),
                                         nn.Sequential(nn.Conv2d(6, 10, 3, 2, 1), nn.ReLU())])
            self.weights = [torch.rand(6) + 0.1, torch.rand(10) + 0.1]  # LPIPS' "lin" layers: w >= 0
        self.calls: list[dict] = []

    def per_image(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        """(B,) distances for inputs in [-1, 1]."""
        total = torch.zeros(in0.shape[0])
        h0, h1 = in0, in1
        for layer, w in zip(self.layers, self.weights):
            h0, h1 = layer(h0), layer(h1)
            diff = (F.normalize(h0, dim=1, eps=1e-10) - F.normalize(h1, dim=1, eps=1e-10)) ** 2
            total = total + (diff * w.view(1, -1, 1, 1)).sum(1).mean((1, 2))
        return total

    def forward(self, in0: torch.Tensor, in1: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        self.calls.append({"normalize": normalize, "in0": in0.detach().clone(), "in1": in1.detach().clone()})
        if normalize:  # lpips: inputs in [0, 1] -> [-1, 1]
            in0, in1 = 2 * in0 - 1, 2 * in1 - 1
        return self.per_image(in0, in1).view(-1, 1, 1, 1)


def images(n: int, seed: int, size: int = 24) -> torch.Tensor:
    """n smooth random RGB images in [0, 1] (a random colour ramp plus mild noise)."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = torch.rand(n, 3, 1, 1, generator=g) * ramp.view(1, 1, 1, -1) + torch.rand(n, 3, 1, 1, generator=g) * 0.5
    return (base + 0.1 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def brute_force_frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID's textbook formula with scipy's sqrtm, independent of features.frechet_distance."""
    linalg = require("scipy.linalg", "test")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def run_rfid(real: torch.Tensor, recon: torch.Tensor, batch: int, net: TinyInception | None = None) -> float:
    meter = external.RFIDMeter(net or TinyInception())
    for i in range(0, real.shape[0], batch):
        meter.update(real[i:i + batch], recon[i:i + batch])
    return meter.compute()


def features(real: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return TinyInception()(real)[0].flatten(1).double().numpy()


# --------------------------------------------------------------------------------------------- rFID
def test_rfid_of_identical_sets_is_zero_and_of_different_sets_matches_brute_force():
    real = images(40, seed=1)
    other = images(40, seed=2)
    noisy = (real + 0.15 * torch.randn(real.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    f_real, f_other, f_noisy = features(real), features(other), features(noisy)
    scale = float(np.trace(np.cov(f_real, rowvar=False)))  # the size of a typical distance

    assert run_rfid(real, real.clone(), batch=7) == pytest.approx(0.0, abs=1e-9 * scale)
    for recon, f_recon in ((other, f_other), (noisy, f_noisy)):
        expected = brute_force_frechet(f_real, f_recon)
        assert expected > 1e-3 * scale  # the two sets really differ in feature space
        # batch by batch (7 does not divide 40) gives the one-shot textbook value
        assert run_rfid(real, recon, batch=7) == pytest.approx(expected, rel=1e-6, abs=1e-9 * scale)
        assert run_rfid(real, recon, batch=40) == pytest.approx(expected, rel=1e-6, abs=1e-9 * scale)
    # and it is a distance between the sets: swapping them changes nothing
    assert run_rfid(noisy, real, batch=5) == pytest.approx(run_rfid(real, noisy, batch=5), rel=1e-6)


def test_rfid_meter_feeds_unit_range_images_and_takes_the_feature_width_from_the_network():
    net = TinyInception(dim=5)
    real, recon = images(6, seed=4), images(6, seed=5)
    meter = external.RFIDMeter(net)
    meter.update(real[:3], recon[:3])
    meter.update(real[3:], recon[3:])
    assert meter.feature_dim == 5 and meter.real.n == 6 and meter.recon.n == 6
    # the images reach the network unchanged: real then reconstruction, batch by batch
    for seen, sent in zip(net.inputs, [real[:3], recon[:3], real[3:], recon[3:]]):
        assert torch.equal(seen, sent)
    with pytest.raises(ValueError, match="at least 2"):
        external.RFIDMeter(TinyInception()).compute()


def test_rfid_meter_refuses_unpooled_features():
    class Unpooled(TinyInception):
        def forward(self, x):
            return [self.body(x)]

    with pytest.raises(ValueError, match="pooled"):
        external.RFIDMeter(Unpooled()).update(images(2, 0), images(2, 1))


# -------------------------------------------------------------------------------------------- LPIPS
def test_lpips_of_identical_images_is_zero_and_grows_with_noise():
    real = images(8, seed=6)
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(real.shape, generator=g)

    def lpips(recon: torch.Tensor, batch: int = 3) -> float:
        meter = external.LPIPSMeter(TinyLPIPS())
        for i in range(0, real.shape[0], batch):
            meter.update(real[i:i + batch], recon[i:i + batch])
        assert meter.count == real.shape[0]
        return meter.compute()

    assert lpips(real.clone()) == 0.0
    values = [lpips((real + sigma * noise).clamp(0, 1)) for sigma in (0.02, 0.08, 0.3)]
    assert 0 < values[0] < values[1] < values[2], values
    assert math.isnan(external.LPIPSMeter(TinyLPIPS()).compute())  # no images: no number


def test_lpips_meter_is_the_mean_of_per_image_distances_on_unit_range_inputs():
    real, recon = images(5, seed=8), images(5, seed=9)
    net = TinyLPIPS()
    meter = external.LPIPSMeter(net)
    meter.update(real[:2], recon[:2])
    meter.update(real[2:], recon[2:])
    # lpips is called with normalize=True on the [0, 1] images themselves
    assert [c["normalize"] for c in net.calls] == [True, True]
    assert torch.equal(net.calls[0]["in0"], real[:2]) and torch.equal(net.calls[1]["in1"], recon[2:])
    with torch.no_grad():
        expected = TinyLPIPS().per_image(2 * real - 1, 2 * recon - 1).double().mean().item()
    assert meter.compute() == pytest.approx(expected, rel=1e-6)
    assert expected > 0


def test_lpips_meter_refuses_a_distance_count_that_is_not_one_per_image():
    class Scalar(TinyLPIPS):
        def forward(self, in0, in1, normalize=False):
            return super().forward(in0, in1, normalize).mean()

    with pytest.raises(ValueError, match="distances for 3 image pairs"):
        external.LPIPSMeter(Scalar()).update(images(3, 0), images(3, 1))


# ----------------------------------------------------------------------------- through vqct eval
@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        yy, xx = np.mgrid[0:32, 0:32]
        base = np.stack([xx, yy, xx + yy], -1) * (4 + i)
        Image.fromarray(np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def test_evaluate_fills_rfid_and_lpips_from_injected_networks(image_folder, tmp_path, monkeypatch):
    nets = {"rfid": TinyInception(), "lpips": TinyLPIPS()}
    devices = []

    def loader(name):
        def load(device):
            devices.append(device)
            return nets[name]
        return load

    monkeypatch.setitem(external.LOADERS, "rfid", loader("rfid"))
    monkeypatch.setitem(external.LOADERS, "lpips", loader("lpips"))
    report = evaluate(make_tokenizer(), image_folder, batch_size=4, report_path=tmp_path / "r.json", device="cpu",
                      compute_fd=False, progress=False)
    assert [str(d) for d in devices] == ["cpu", "cpu"]
    assert "rfid" not in report["skipped"] and "lpips" not in report["skipped"]
    assert report["data"]["count"] == 6

    # the report's numbers are the metrics of exactly the images the networks were shown
    seen = nets["rfid"].inputs  # real, recon, real, recon: batches of 4 and 2
    assert [x.shape[0] for x in seen] == [4, 4, 2, 2]
    real, recon = torch.cat(seen[0::2]), torch.cat(seen[1::2])
    assert not torch.equal(real, recon)
    with torch.no_grad():
        f_real = nets["rfid"](real)[0].flatten(1).double().numpy()
        f_recon = nets["rfid"](recon)[0].flatten(1).double().numpy()
    rfid = report["metrics"]["rfid"]
    assert isinstance(rfid, float) and rfid > 0
    assert rfid == pytest.approx(brute_force_frechet(f_real, f_recon), rel=1e-6)

    calls = nets["lpips"].calls
    assert torch.equal(torch.cat([c["in0"] for c in calls]), real)
    assert torch.equal(torch.cat([c["in1"] for c in calls]), recon)
    with torch.no_grad():
        expected_lpips = nets["lpips"].per_image(2 * real - 1, 2 * recon - 1).double().mean().item()
    assert isinstance(report["metrics"]["lpips"], float) and report["metrics"]["lpips"] > 0
    assert report["metrics"]["lpips"] == pytest.approx(expected_lpips, rel=1e-6)
    # the written report carries them too
    written = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert written["rfid"] == pytest.approx(rfid) and written["lpips"] == pytest.approx(expected_lpips, rel=1e-6)
