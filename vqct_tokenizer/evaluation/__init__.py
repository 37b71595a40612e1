"""Evaluation of tokenizers: fidelity (PSNR, SSIM, MS-SSIM), FD-EffNetL0, optional rFID/LPIPS, code
usage and rate. ``evaluate()`` streams a dataset and writes a JSON report with two PNG figures.

Heavy pieces (EfficientNet-Lite0, pytorch-fid, lpips) are imported only when used.
"""

from .evaluate import evaluate, list_images, load_model
from .features import (FDMeter, GaussianStats, effnet_features, effnet_pooled, frechet_distance,
                       load_effnet_lite0)
from .metrics import FidelityMeter, ms_ssim, ms_ssim_plan, psnr, ssim
from .usage import CodeUsage, cell_bits, entropy_bits, perplexity

__all__ = [
    "CodeUsage", "FDMeter", "FidelityMeter", "GaussianStats", "cell_bits", "effnet_features", "effnet_pooled",
    "entropy_bits", "evaluate", "frechet_distance", "list_images", "load_effnet_lite0", "load_model", "ms_ssim",
    "ms_ssim_plan", "perplexity", "psnr", "ssim",
]
