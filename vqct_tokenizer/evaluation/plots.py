"""PNG figures of an evaluation, drawn with PIL only (matplotlib is not a dependency)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from ..image_io import to_output

BG = (255, 255, 255)
INK = (30, 30, 30)
GRID = (225, 225, 225)
BAR = (52, 101, 164)


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable
    except TypeError:
        return ImageFont.load_default()


def save_recon_grid(originals: Sequence[torch.Tensor], recons: Sequence[torch.Tensor], path: str | Path,
                    gap: int = 4, header: int = 20) -> None:
    """Originals in the top row, their reconstructions below; (3, H, W) tensors in [0, 1] (clamped).

    Evaluation reports and the trainer's periodic ``images/step_*.png`` both draw this figure.
    """
    top = to_output(torch.stack(list(originals)).clamp(0, 1), "pil")
    bottom = to_output(torch.stack(list(recons)).clamp(0, 1), "pil")
    w, h = top[0].width, top[0].height
    width = max(len(top) * (w + gap) - gap, 260)
    canvas = Image.new("RGB", (width, header + 2 * h + gap), BG)
    ImageDraw.Draw(canvas).text((2, 3), "top: originals   bottom: reconstructions", fill=INK, font=_font(12))
    for i, (a, b) in enumerate(zip(top, bottom)):
        canvas.paste(a, (i * (w + gap), header))
        canvas.paste(b, (i * (w + gap), header + h + gap))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], counts: torch.Tensor, title: str) -> None:
    """One sorted-frequency plot: codes by rank on x, share of the group's tokens (%) on y."""
    font, small = _font(14), _font(11)
    x0, y0, x1, y1 = box
    left, bottom, top = x0 + 56, y1 - 40, y0 + 48
    right = x1 - 12
    draw.text((x0 + 8, y0 + 4), title, fill=INK, font=font)
    total = int(counts.sum())
    shares = (counts.double().sort(descending=True).values * (100.0 / max(total, 1))).tolist()
    peak = max(shares[0] if shares else 0.0, 1e-12)
    for frac in (0.0, 0.5, 1.0):  # y grid and tick labels
        y = bottom - frac * (bottom - top)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((x0 + 4, y - 7), f"{frac * peak:.2f}", fill=INK, font=small)
    width = right - left
    n = len(shares)
    for px in range(width):  # sorted descending: the first code of a pixel's range is its maximum
        rank = px * n // width  # with fewer codes than pixels, a code spans several columns
        value = shares[min(rank, n - 1)] if n else 0.0
        if value > 0:
            draw.line([(left + px, bottom), (left + px, bottom - value / peak * (bottom - top))], fill=BAR)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=INK)
    for rank in sorted({1, (n + 1) // 2, n}):  # tick under the middle of the code's bar
        x = left + (rank - 0.5) * width / max(n, 1)
        draw.text((min(x - 4, right - 24), bottom + 4), str(rank), fill=INK, font=small)
    draw.text((left + width // 2 - 150, bottom + 20), "codes ranked by frequency (rank 1 = most used)",
              fill=INK, font=small)
    draw.text((x0 + 4, top - 22), "% of the group's tokens", fill=INK, font=small)


def save_usage_plot(counts: dict[str, torch.Tensor], titles: dict[str, str], path: str | Path,
                    size: tuple[int, int] = (900, 300)) -> None:
    """Stacked panels, one per code group (adjective, noun; or code), of sorted code frequencies."""
    w, h = size
    canvas = Image.new("RGB", (w, h * len(counts)), BG)
    draw = ImageDraw.Draw(canvas)
    for i, (name, c) in enumerate(counts.items()):
        _panel(draw, (0, i * h, w, (i + 1) * h), c, titles.get(name, name))
    canvas.save(path)
