"""Training images: a folder or a list file, resized/cropped, flipped, in a resumable order.

The order and the augmentation of every sample are functions of (seed, epoch, position) only, so
two runs with the same seed see the same data in the same order (equal-budget baselines), and a
resumed run continues exactly where it stopped, whatever the number of workers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..image_io import check_pixel_limit, list_image_paths

CROPS = ("resize", "center", "random", "random_resized")


class ImageDataset(Dataset):
    """Yields (3, R, R) float tensors in [-1, 1].

    ``crop``: ``resize`` (stretch the whole image), ``center`` / ``random`` (short side to R, then an
    R×R crop), or ``random_resized``: a square of side s·(short side), s uniform in ``scale``, at a
    random position, resized to R (never upsampled: the side is at least R). A fully convolutional
    model trained on such crops sees objects at many scales and encodes any image size natively.
    """

    def __init__(self, source: str | Path, resolution: int, crop: str = "resize", flip: bool = True,
                 scale: tuple[float, float] = (0.33, 1.0)) -> None:
        if crop not in CROPS:
            raise ValueError(f"data.crop must be one of {CROPS}, got {crop!r}")
        lo, hi = float(scale[0]), float(scale[1])
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"data.scale must be [lo, hi] with 0 < lo <= hi <= 1, got {list(scale)}")
        self.files = list_image_paths(source)
        self.resolution, self.crop, self.flip, self.scale = resolution, crop, flip, (lo, hi)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        index, aug_seed = item
        rng = random.Random(aug_seed)
        r = self.resolution
        with Image.open(self.files[index]) as img:
            # the limit inference applies (image_io.load_image), checked before any pixel is decoded
            check_pixel_limit(img, self.files[index])
            if self.crop != "random_resized":  # a crop at native scale needs every pixel
                img.draft("RGB", (r, r))  # JPEG: decode at reduced scale directly, much faster
            img = img.convert("RGB")
        if self.crop == "random_resized":
            short = min(img.size)
            side = min(short, max(r, round(rng.uniform(*self.scale) * short)))
            left, top = rng.randint(0, img.width - side), rng.randint(0, img.height - side)
            img = img.crop((left, top, left + side, top + side))
            if side != r:  # (an image smaller than R is upsampled: the only case that does)
                img = img.resize((r, r), Image.BICUBIC)
        elif self.crop == "resize":
            img = img.resize((r, r), Image.BICUBIC)
        else:
            s = r / min(img.size)
            img = img.resize((max(r, round(img.width * s)), max(r, round(img.height * s))), Image.BICUBIC)
            if self.crop == "random":
                left, top = rng.randint(0, img.width - r), rng.randint(0, img.height - r)
            else:
                left, top = (img.width - r) // 2, (img.height - r) // 2
            img = img.crop((left, top, left + r, top + r))
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
        return x / 127.5 - 1.0


class ResumableSampler(Sampler):
    """Distributed, epoch-seeded sampler that can start mid-epoch.

    Like ``DistributedSampler``: each epoch is a permutation seeded by (seed, epoch), padded to a
    multiple of the world size, and rank r takes positions r, r+W, r+2W... Unlike it, it yields
    (index, augmentation seed) pairs and can skip the first ``start`` samples of the epoch on resume.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch, self.start = 0, 0
        self.per_rank = -(-size // world_size)

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        order += order[: self.per_rank * self.world_size - self.size]  # pad so every rank has equal work
        mine = order[self.rank::self.world_size]
        for pos in range(self.start, self.per_rank):
            global_pos = pos * self.world_size + self.rank
            yield mine[pos], hash((self.seed, self.epoch, global_pos)) & 0x7FFFFFFF
