"""Optional metrics whose networks are downloaded on first use: rFID and LPIPS.

* **rFID**: FID between real and reconstructed images with pytorch-fid's Inception-v3 (the
  2048-d pool features, its own resizing to 299 and normalisation).
* **LPIPS**: the ``lpips`` package with the VGG backbone, inputs in [0, 1] (``normalize=True``),
  averaged over images.

Neither package is a dependency of vqct-tokenizer. Each is computed only when it imports *and* its
weights load (they are fetched from the internet the first time); otherwise :func:`load_external`
returns the reason, and the evaluation report lists the metric under ``skipped``.
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


#: name -> function building the network; tests replace entries to simulate failures.
LOADERS: dict[str, Callable[[torch.device], torch.nn.Module]] = {"rfid": _load_rfid_net, "lpips": _load_lpips_net}


class RFIDMeter:
    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.real = GaussianStats(2048)
        self.recon = GaussianStats(2048)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        device = next(self.net.parameters()).device
        return self.net(x.to(device))[0].flatten(1)

    @torch.no_grad()
    def update(self, real: torch.Tensor, recon: torch.Tensor) -> None:
        self.real.update(self._pool(real))
        self.recon.update(self._pool(recon))

    def compute(self) -> float:
        return frechet_from_stats(self.real, self.recon)


class LPIPSMeter:
    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.total = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, real: torch.Tensor, recon: torch.Tensor) -> None:
        device = next(self.net.parameters()).device
        d = self.net(real.to(device), recon.to(device), normalize=True)
        self.total += float(d.sum())
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
