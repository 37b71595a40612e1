"""``vqct eval``: reconstruction quality, FD-EffNetL0, code usage and rate of a tokenizer on a dataset."""

from __future__ import annotations

import argparse
from typing import Any

from ..defaults import DEFAULT_MODEL


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"exported tokenizer folder, shipped name, Hub id, or training checkpoint (default: {DEFAULT_MODEL})")
    parser.add_argument("--data", required=True, help="image folder (recursive) or list file of paths relative to it")
    parser.add_argument("--resolution", type=int, default=None, help="evaluation resolution (default: the model's)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--stride", type=int, default=1,
                        help="evaluate every K-th image (an even spread over class-sorted lists; before --limit)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="images encoded and decoded at a time; lower it if memory runs out (default: 16)")
    parser.add_argument("-o", "--output", default="eval_report.json",
                        help="report path; <stem>_grid.png and <stem>_usage.png are written beside it")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--no-fd", action="store_true", help="skip FD-EffNetL0")
    parser.add_argument("--no-external", action="store_true",
                        help="do not try rFID (pytorch-fid) and LPIPS (lpips), which download weights")
    parser.add_argument("--jpeg-anchor", action="store_true",
                        help="also score JPEG at the same bits per image (per image, the highest quality whose "
                             "file fits), side by side")
    parser.add_argument("--refine", type=int, default=0, metavar="N",
                        help="score tokens refined for N steps against the decoder (encode's refine_steps; "
                             "default: 0, the encoder's tokens)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate

    report = evaluate(args.model, args.data, resolution=args.resolution, limit=args.limit, stride=args.stride,
                      batch_size=args.batch_size, report_path=args.output, device=args.device,
                      compute_fd=not args.no_fd, external=not args.no_external, progress=not args.quiet,
                      jpeg_anchor=args.jpeg_anchor, refine_steps=args.refine,
                      checkpoint_loader=_tokenizer_from_checkpoint)
    print(format_summary(report))
    return 0


def _tokenizer_from_checkpoint(path):
    """The trainer's conversion, imported only when --model is a checkpoint."""
    try:
        from ..training.export import tokenizer_from_checkpoint
    except ImportError as e:
        raise RuntimeError(f"{path} looks like a training checkpoint, but the training package cannot convert it "
                           f"({e}); install vqct-tokenizer[train], or pass an exported tokenizer folder") from e
    return tokenizer_from_checkpoint(path)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "skipped"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value == value and abs(value) != float("inf") else str(value)
    return str(value)


def format_summary(report: dict[str, Any]) -> str:
    m, rate, usage, data = report["metrics"], report["rate"], report["usage"], report["data"]
    rows: list[tuple[str, str]] = [
        ("model", f"{report['model']['id']} ({report['model']['kind']}, {report['model']['quantizer']})"),
        ("images", f"{data['count']} at {data['resolution']}x{data['resolution']} from {data['source']}"),
        ("tokens", f"refined for {report['refine_steps']} steps against the decoder"
         if report.get("refine_steps", 0) > 1 else "the encoder's"),
        ("PSNR (dB)", _fmt(m["psnr"], 2)),
        ("SSIM", _fmt(m["ssim"])),
        ("MS-SSIM", _fmt(m["ms_ssim"]) + f"  ({report['methods']['ms_ssim']['note']})"),
        ("FD-EffNetL0", _fmt(m["fd_effnet_l0"], 3)),
        ("rFID", _fmt(m["rfid"], 3)),
        ("LPIPS (VGG)", _fmt(m["lpips"])),
        ("chroma kept (slope)", "Cb {Cb:.2f}, Cr {Cr:.2f}  (1 = all of it; 0.5 = halved)".format(**report["colour"]["slope"])
         if "colour" in report else "–"),
        ("tokens / image", _fmt(rate["tokens_per_image"], 0)),
        ("bits / image", f"{rate['bits_per_image']:.0f} (ordered ids: {rate['bits_per_image_ordered']:.0f})"),
        ("entropy bits / image", f"{rate['entropy_bits_per_image_marginal']:.0f} per-slot, "
                                 f"{rate['entropy_bits_per_image_joint']:.0f} joint per cell"),
    ]
    for name, g in usage["groups"].items():
        rows.append((f"{name} codes used" if name != "code" else "codes used", f"{g['used']}/{g['size']} ({g['used_percent']:.1f}%), "
                                           f"perplexity {g['perplexity']:.1f}"))
    rows.append(("distinct cell tokens", f"{usage['distinct_cell_tokens']} "
                                         f"(perplexity {usage['cell_token_perplexity']:.1f})"))
    if "jpeg_anchor" in report:
        j = report["jpeg_anchor"]
        jm = j["metrics"]
        rows.append(("JPEG, same bits", f"PSNR {_fmt(jm['psnr'], 2)}, SSIM {_fmt(jm['ssim'])}, MS-SSIM {_fmt(jm['ms_ssim'])}, "
                                        f"FD-EffNetL0 {_fmt(jm['fd_effnet_l0'], 3)}; mean quality {j['mean_quality']:.1f}, "
                                        f"{j['jpeg_bits_per_image']:.0f} of {j['budget_bits_per_image']:.0f} bits, "
                                        f"{j['over_budget']} over budget"))
    rows.append(("time", f"{report['timing']['wall_s']:.1f} s ({report['timing']['images_per_s']:.2f} img/s)"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"skipped {name}: {why}" for name, why in report["skipped"].items()]
    if report["files"]:
        lines.append("wrote " + ", ".join(report["files"].values()))
    return "\n".join(lines)
