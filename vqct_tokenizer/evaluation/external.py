"""Optional metrics whose networks are downloaded on first use: rFID and LPIPS.

* **rFID**: FID between real and reconstructed images with pytorch-fid's Inception-v3 (the
  2048-d pool features, its own resizing to 299 and normalisation).
* **LPIPS**: the ``lpips`` package with the VGG backbone, inputs in [0, 1] (``normalize=True``),
  averaged over images.

Neither package is a dependency of vqct-tokenizer. Each is computed only when it imports *and* its
weights load (they are fetched from the internet the first time); otherwise :func:`load_external`
returns the reason, and the evaluation report lists the metric under ``skipped``.

The networks come from :data:`LOADERS` (name -> ``loader(device)``). Replacing an entry injects
another network with the same call convention, which is how the tests run the compute code with
tiny random stand-ins (and simulate failures):

* rFID: ``net(x)`` with ``x`` (B, 3, H, W) RGB in [0, 1] returns a sequence whose first element is
  the pooled features (B, F, 1, 1) (pytorch-fid's ``InceptionV3`` does its own resizing and
  normalisation). ``F`` is taken from the first batch (2048 for Inception).
* LPIPS: ``net(real, recon, normalize=True)`` with both in [0, 1] returns one distance per image,
  any shape with B elements (``lpips.LPIPS`` returns (B, 1, 1, 1)).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .features import GaussianStats, frechet_from_stats

INSTALL_HINT = {"rfid": "pytorch-fid", "lpips": "lpips"}


def _load_rfid_net(device: torch.device) -> torch.nn.Module:
    from pytorch_fid.inception import InceptionV3

    return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()


def _load_lpips_net(device: torch.device) -> torch.nn.Module:
    import lpips

    return lpips.LPIPS(net="vgg", verbose=False).to(device).eval()


#: name -> function building the network. Replace an entry (``monkeypatch.setitem``) to inject a
#: stand-in network with the same call convention (see the module docstring) or to simulate a failure.
LOADERS: dict[str, Callable[[torch.device], torch.nn.Module]] = {"rfid": _load_rfid_net, "lpips": _load_lpips_net}


def _net_device(net: torch.nn.Module) -> torch.device:
    param = next(net.parameters(), None)
    if param is None:
        param = next(net.buffers(), None)
    return param.device if param is not None else torch.device("cpu")


class RFIDMeter:
    """Fréchet distance between Gaussians of the network's pooled features of real and reconstructed
    images, accumulated batch by batch (float64)."""

    def __init__(self, net: torch.nn.Module, feature_dim: int | None = None) -> None:
        self.net = net
        # 2048 for pytorch-fid's Inception; None: the width of the first batch's features
        self.feature_dim = feature_dim
        self.real: GaussianStats | None = None
        self.recon: GaussianStats | None = None
        if feature_dim is not None:
            self.real, self.recon = GaussianStats(feature_dim), GaussianStats(feature_dim)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.net(x.to(_net_device(self.net)))[0]
        if feats.dim() == 4 and feats.shape[2:] != (1, 1):
            raise ValueError(f"rFID network returned features of shape {tuple(feats.shape)}, expected pooled (B, F, 1, 1)")
        if feats.shape[0] != x.shape[0]:
            raise ValueError(f"rFID network returned {feats.shape[0]} feature rows for {x.shape[0]} images")
        return feats.flatten(1)

    @torch.no_grad()
    def update(self, real: torch.Tensor, recon: torch.Tensor) -> None:
        f_real, f_recon = self._pool(real), self._pool(recon)
        if self.real is None or self.recon is None:
            self.feature_dim = f_real.shape[1]
            self.real, self.recon = GaussianStats(self.feature_dim), GaussianStats(self.feature_dim)
        self.real.update(f_real)
        self.recon.update(f_recon)

    def compute(self) -> float:
        if self.real is None or self.recon is None:
            raise ValueError("rFID needs at least 2 images, got 0")
        return frechet_from_stats(self.real, self.recon)


class LPIPSMeter:
    """Mean LPIPS over images: the network's per-image distances summed, divided by the image count."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.total = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, real: torch.Tensor, recon: torch.Tensor) -> None:
        device = _net_device(self.net)
        d = self.net(real.to(device), recon.to(device), normalize=True)
        if d.numel() != real.shape[0]:
            raise ValueError(f"LPIPS network returned {d.numel()} distances for {real.shape[0]} image pairs")
        self.total += float(d.double().sum())
        self.count += real.shape[0]

    def compute(self) -> float:
        return self.total / self.count if self.count else float("nan")


METERS: dict[str, Callable[[torch.nn.Module], Any]] = {"rfid": RFIDMeter, "lpips": LPIPSMeter}


def skip_reason(name: str, error: BaseException) -> str:
    """A one-line reason for the report: missing package, or weights that could not be had."""
    if isinstance(error, ImportError):
        return (f"could not import its package ({type(error).__name__}: {error}); "
                f"it is optional, install it with pip install {INSTALL_HINT[name]}")
    return (f"its weights could not be loaded ({type(error).__name__}: {error}); they are "
            "downloaded on first use, so this needs a connection once (or a filled torch hub cache)")


def load_external(names: list[str], device: torch.device) -> tuple[dict[str, Any], dict[str, str]]:
    """Try to build the meters for ``names``; returns (meters, {name: why skipped})."""
    meters: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in names:
        try:
            meters[name] = METERS[name](LOADERS[name](device))
        except Exception as e:  # ImportError, URLError, OSError, RuntimeError, hash mismatch, ...
            skipped[name] = skip_reason(name, e)
    return meters, skipped
