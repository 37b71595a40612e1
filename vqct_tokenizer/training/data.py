"""Training images: a folder or a list file, resized/cropped, flipped, in a resumable order.

The order and the augmentation of every sample are functions of (seed, epoch, position) only, so
two runs with the same seed see the same data in the same order (equal-budget baselines), and a
resumed run continues exactly where it stopped, whatever the number of workers.

Pixels go through the model's ``ImageProcessor`` (``vqct_tokenizer.image_processor``): the same file
reader, resampler and [-1, 1] mapping as ``VQCTTokenizer.encode``. Without random crop and flip a
sample is exactly what the exported tokenizer's preprocessing makes of the file, because export writes
``resize_mode_for_crop(crop)`` into its config.json.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from ..image_io import list_image_paths
from ..image_processor import TRAINING_CROPS, ImageProcessor, resize_mode_for_crop
from .colour import jitter_chroma
from .synthetic import dead_leaves, plain_pattern

CROPS = tuple(TRAINING_CROPS)
#: The resampling of training images (the trainer keeps ImageDataset's default); export writes it
#: into config.json beside the resize mode.
TRAIN_RESAMPLE = "bicubic"


class ImageDataset(Dataset):
    """Yields (3, R, R) float tensors in [-1, 1].

    ``crop``: ``resize`` (stretch the whole image), ``center`` / ``random`` (short side to R, then an
    R×R crop), ``pad`` (long side to R, white borders), or ``random_resized``: a square of side
    s·(short side), s uniform in ``scale``, at a random position, resized to R (never upsampled: the
    side is at least R). A fully convolutional model trained on such crops sees objects at many
    scales and encodes any image size natively.

    ``hue_jitter``: the probability that a sample's chroma is rotated by a random angle and scaled by
    a factor in ``saturation`` (``training/colour.py``); 0 leaves colours alone.

    ``synthetic``: the probability that a sample is replaced by a dead-leaves image of flat random
    colours (``training/synthetic.py``); 0 never does, and then samples are exactly as before.
    ``synthetic_plain``: the share of those synthetic samples that are plain patterns (flat fields,
    gradients, hue ramps, checkerboards: ``synthetic.plain_pattern``) instead of dead leaves.
    """

    def __init__(self, source: str | Path, resolution: int, crop: str = "resize", flip: bool = True,
                 scale: tuple[float, float] = (0.33, 1.0), resample: str = TRAIN_RESAMPLE,
                 hue_jitter: float = 0.0, saturation: tuple[float, float] = (1.0, 1.0),
                 synthetic: float = 0.0, synthetic_plain: float = 0.0) -> None:
        mode = resize_mode_for_crop(crop)  # checks crop
        lo, hi = float(scale[0]), float(scale[1])
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"data.scale must be [lo, hi] with 0 < lo <= hi <= 1, got {list(scale)}")
        if not 0.0 <= float(hue_jitter) <= 1.0:
            raise ValueError(f"data.hue_jitter must be a probability in [0, 1], got {hue_jitter!r}")
        if not 0.0 <= float(synthetic) <= 1.0:
            raise ValueError(f"data.synthetic must be a probability in [0, 1], got {synthetic!r}")
        if not 0.0 <= float(synthetic_plain) <= 1.0:
            raise ValueError(f"data.synthetic_plain must be a share in [0, 1], got {synthetic_plain!r}")
        if not 0.0 <= float(saturation[0]) <= float(saturation[1]):
            raise ValueError(f"data.saturation must be [lo, hi] with 0 <= lo <= hi, got {list(saturation)}")
        self.files = list_image_paths(source)
        self.resolution, self.crop, self.flip, self.scale = resolution, crop, flip, (lo, hi)
        self.hue_jitter, self.saturation = float(hue_jitter), (float(saturation[0]), float(saturation[1]))
        self.synthetic, self.synthetic_plain = float(synthetic), float(synthetic_plain)
        self.processor = ImageProcessor(resolution, mode, resample)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        index, aug_seed = item
        rng = random.Random(aug_seed)
        proc, r = self.processor, self.resolution
        if self.synthetic and rng.random() < self.synthetic:
            # the extra draw only when asked, so that older configs see the same samples
            if self.synthetic_plain and rng.random() < self.synthetic_plain:
                return proc.normalize(plain_pattern(rng, r))
            return proc.normalize(dead_leaves(rng, r))
        # inference's reader: its pixel limit (checked before decoding), alpha over white, 16-bit, CMYK
        img = proc.load(self.files[index])
        h, w = int(img.shape[1]), int(img.shape[2])
        if self.crop == "random_resized":
            short = min(h, w)
            side = min(short, max(r, round(rng.uniform(*self.scale) * short)))
            left, top = rng.randint(0, w - side), rng.randint(0, h - side)
            # (an image smaller than R is upsampled: the only case that does)
            x = proc.resample_to(img[:, top:top + side, left:left + side], r, r)
        elif self.crop == "random":  # center's resize, with the window at a random place
            sh, sw = proc.scaled_size(h, w)
            left, top = rng.randint(0, sw - r), rng.randint(0, sh - r)
            x = proc.resize(img, crop_at=(top, left))
        else:  # resize, center, pad: exactly the tokenizer's preprocessing
            x = proc.resize(img)
        if self.flip and rng.random() < 0.5:
            x = x.flip(-1)
        if self.hue_jitter and rng.random() < self.hue_jitter:
            x = jitter_chroma(x, rng, self.saturation)
        return proc.normalize(x)

    def plain_sample(self, index: int) -> torch.Tensor:
        """Item ``index`` as the tokenizer's preprocessing makes it (no random crop, flip or jitter), in [-1, 1]."""
        return self.processor.normalize(self.processor.resize(self.processor.load(self.files[index])))


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
