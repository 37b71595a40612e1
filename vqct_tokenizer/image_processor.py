"""The one image pipeline: what training, evaluation, inference and dataset tokenization do to pixels.

    file / PIL / array / tensor --image_io--> (3, H, W) float32 in [0, 1]
        --ImageProcessor.resize--> (3, R, R) in [0, 1]          (resize_mode, resample)
        --ImageProcessor.normalize--> (3, R, R) in [-1, 1]      (the model's range)

``VQCTTokenizer.preprocess`` (and so ``encode``), ``evaluate``, ``encode_dataset`` and the training
``ImageDataset`` all go through an ``ImageProcessor``, so the same image gives the same pixels
everywhere. Training adds random choices only (where to crop, at what scale, whether to flip); every
resampling and the normalisation are the processor's. ``VQCTConfig.resize_mode`` and ``resample``
(written by export from the training crop, see ``resize_mode_for_crop``) are its settings.

Decisions, made once here:
  * Resampling is antialiased bicubic (``torch.nn.functional.interpolate``, ``antialias=True``) on
    float32 tensors. It is the only resampler that serves every input type alike (a PIL image, its
    numpy array and its tensor give the same pixels), it keeps full precision (PIL resizes uint8 and
    rounds to 8 bits), and with ``antialias=True`` a downscale filters over the whole footprint like
    PIL's, instead of aliasing.
  * No JPEG draft mode (decoding at 1/2, 1/4 or 1/8 scale in the DCT domain). It changes pixels
    (up to 0.09 per pixel on 64x64 faces) and cannot apply to a PIL image or an array at inference,
    so every image is fully decoded, then resized here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .config import RESAMPLES, RESIZE_MODES, VQCTConfig
from .image_io import check_native_pixels, check_native_size, native_file_limit, read_image_file, to_tensors

#: Training ``data.crop`` -> the deterministic ``resize_mode`` inference must use for the same model.
#: Random crops map to the crop they randomise: "random" moves the window of "center", and
#: "random_resized" also varies its scale; both are centred square crops without the randomness.
TRAINING_CROPS: dict[str, str] = {
    "resize": "resize",            # stretch the whole image to R x R
    "center": "center_crop",       # short side to R, central R x R
    "pad": "pad",                  # long side to R, white borders
    "random": "center_crop",       # short side to R, R x R at a random position
    "random_resized": "center_crop",  # a random square of the native image, resized to R
}


def resize_mode_for_crop(crop: str) -> str:
    """The ``resize_mode`` that reproduces training ``data.crop`` without its randomness."""
    if crop not in TRAINING_CROPS:
        raise ValueError(f"data.crop must be one of {tuple(TRAINING_CROPS)}, got {crop!r}")
    return TRAINING_CROPS[crop]


@dataclass(frozen=True)
class ImageProcessor:
    """Resize mode, resampling and value range of a model's input, for images in [0, 1].

    Args:
        resolution: side R of the square the encoder sees with ``resize=True``.
        resize_mode: ``center_crop`` (short side to R, central R x R), ``resize`` (stretch to R x R)
            or ``pad`` (long side to R, centred on white).
        resample: ``bicubic`` (default), ``bilinear``, ``nearest``; ``lanczos`` runs as antialiased bicubic.
        pad_multiple: native-size images (``resize=False``) are padded bottom/right to a multiple of
            this (the model's downsampling factor).
    """

    resolution: int
    resize_mode: str = "center_crop"
    resample: str = "bicubic"
    pad_multiple: int = 1

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.resample not in RESAMPLES:
            raise ValueError(f"resample must be one of {RESAMPLES}, got {self.resample!r}")
        if int(self.resolution) < 1 or int(self.pad_multiple) < 1:
            raise ValueError(f"resolution and pad_multiple must be >= 1, got {self.resolution}, {self.pad_multiple}")

    @classmethod
    def from_config(cls, config: VQCTConfig, resolution: int | None = None) -> "ImageProcessor":
        """The processor of a model's config.json (at ``resolution`` instead of its own, if given)."""
        return cls(resolution or config.resolution, config.resize_mode, config.resample, config.downsample_factor)

    # ------------------------------------------------------------------ reading
    def load(self, path: Any, max_pixels: int | None = None, limit_hint: str | None = None) -> torch.Tensor:
        """An image file as (3, H, W) in [0, 1], read as inference reads it (pixel limit, alpha over
        white, 16-bit and CMYK converted); no resizing."""
        return read_image_file(path, max_pixels, limit_hint)

    # ------------------------------------------------------------------ geometry ([0, 1] in and out)
    def scaled_size(self, h: int, w: int) -> tuple[int, int]:
        """(H', W') an h x w image is resampled to before ``resize_mode`` crops or pads it to R x R."""
        r = self.resolution
        if self.resize_mode == "resize":
            return r, r
        if self.resize_mode == "center_crop":  # the short side becomes R
            scale = r / min(h, w)
            return max(r, round(h * scale)), max(r, round(w * scale))
        scale = r / max(h, w)  # pad: the long side becomes R
        return max(1, round(h * scale)), max(1, round(w * scale))

    def resize(self, img: torch.Tensor, crop_at: tuple[int, int] | None = None) -> torch.Tensor:
        """(3, H, W) -> (3, R, R) following ``resize_mode``.

        ``crop_at``: (top, left) of the R x R window in the scaled image of ``center_crop``; default
        the centre. Training's random crop picks it; everything else about the result stays the same.
        """
        r = self.resolution
        nh, nw = self.scaled_size(int(img.shape[1]), int(img.shape[2]))
        img = self.resample_to(img, nh, nw)
        if self.resize_mode == "resize":
            return img
        if self.resize_mode == "center_crop":
            top, left = crop_at if crop_at is not None else ((nh - r) // 2, (nw - r) // 2)
            if not (0 <= top <= nh - r and 0 <= left <= nw - r):
                raise ValueError(f"crop_at {crop_at} is outside the {nh}x{nw} scaled image")
            return img[:, top:top + r, left:left + r]
        out = torch.ones(3, r, r, dtype=img.dtype)  # pad: white around the centred image
        top, left = (r - nh) // 2, (r - nw) // 2
        out[:, top:top + nh, left:left + nw] = img
        return out

    def resample_to(self, img: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(3, H, W) -> (3, h, w): the one resampler of the package (see the module notes)."""
        if tuple(img.shape[1:]) == (h, w):
            return img
        x = img[None]
        if self.resample == "nearest":
            out = F.interpolate(x, size=(h, w), mode="nearest-exact")
        else:  # torch has no lanczos; antialiased bicubic is the closest
            mode = "bicubic" if self.resample == "lanczos" else self.resample
            out = F.interpolate(x, size=(h, w), mode=mode, antialias=True, align_corners=False)
        return out[0].clamp_(0.0, 1.0)  # bicubic overshoots at edges

    def pad(self, img: torch.Tensor) -> torch.Tensor:
        """Pad bottom/right by edge replication so H and W are multiples of ``pad_multiple``.

        Only bottom/right, so the original stays at the top-left and cropping the decoded image to
        the original (H, W) undoes the padding exactly.
        """
        m = self.pad_multiple
        ph, pw = (-int(img.shape[1])) % m, (-int(img.shape[2])) % m
        if ph == 0 and pw == 0:
            return img
        return F.pad(img[None], (0, pw, 0, ph), mode="replicate")[0]

    # ------------------------------------------------------------------ value range
    # one new tensor each, the rest in place: at native size an image is hundreds of megabytes
    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> the model's [-1, 1]."""
        return x.mul(2.0).sub_(1.0)

    @staticmethod
    def denormalize(x: torch.Tensor) -> torch.Tensor:
        """The model's [-1, 1] (a decoder output) -> float32 [0, 1], clamped."""
        return x.float().add(1.0).mul_(0.5).clamp_(0.0, 1.0)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """(3, H, W) in [0, 1] -> the encoder's (3, R, R) input in [-1, 1]."""
        return self.normalize(self.resize(img))

    # ------------------------------------------------------------------ the tokenizer's inputs
    def preprocess(self, images: Any, resize: bool = True, max_native_pixels: int | None = None,
                   memory: Callable[[int, int], int] | None = None
                   ) -> tuple[list[torch.Tensor], bool, list[tuple[int, int]]]:
        """Any input ``VQCTTokenizer.encode`` accepts -> (list of (3, H', W') in [-1, 1], whether
        batched, original (H, W) of each). ``resize=False`` keeps the native size, padded to
        ``pad_multiple``, and refuses images above ``max_native_pixels`` (None: no limit), files and
        arrays from their size before converting their pixels; ``memory(h, w)`` (bytes), if given,
        puts the memory a refused image would need in the message."""
        if resize:
            tensors, batched = to_tensors(images)
        else:  # files up to the native limit may be read even above PIL's default limit
            def size_check(name: str, h: int, w: int) -> None:  # from a file's header, before decoding it
                check_native_size(h, w, self.pad_multiple, max_native_pixels, name, memory)

            tensors, batched = to_tensors(images, *native_file_limit(max_native_pixels), size_check)
            check_native_pixels(tensors, self.pad_multiple, max_native_pixels, images, memory)
        sizes = [(int(t.shape[1]), int(t.shape[2])) for t in tensors]
        shaped = []
        for i in range(len(tensors)):  # dropping each input once shaped keeps one native image's copies alive
            t, tensors[i] = tensors[i], None
            shaped.append(self.normalize(self.resize(t) if resize else self.pad(t)))
        return shaped, batched, sizes


# Module-level forms of ImageProcessor's geometry, for callers that have no processor.
def resize_to(img: torch.Tensor, resolution: int, mode: str, resample: str) -> torch.Tensor:
    """(3, H, W) -> (3, R, R) following ``resize_mode``: ``ImageProcessor(R, mode, resample).resize``."""
    return ImageProcessor(resolution, mode, resample).resize(img)


def pad_to_multiple(img: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right by edge replication to a multiple: ``ImageProcessor.pad``."""
    return ImageProcessor(1, pad_multiple=multiple).pad(img)
