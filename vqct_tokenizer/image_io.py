"""Image input and output for the tokenizer.

Every accepted input becomes a float32 tensor (3, H, W) with values in [0, 1]; resizing, cropping
and the model's value range are applied to that tensor by ``image_processor.ImageProcessor``, so a
PIL image, its numpy array and its tensor give the same tokens.

Value-range convention:
  * PIL images and uint8 arrays/tensors: 0..255;
  * float numpy arrays and float tensors: [0, 1] (anything outside raises ImageError).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import ImageError, NotEnoughMemoryError, PixelLimitError, gib

# A truncated file must be an error, not a silently grey-padded image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_RANGE_TOLERANCE = 1e-4  # float round-off from upstream pipelines, e.g. 1.0000001


#: The CLI flag that raises the file and native pixel limits (named in PixelLimitError messages).
PIXELS_FLAG = "--max-pixels"
_PIL_HINT = "set PIL.Image.MAX_IMAGE_PIXELS = N before loading"
# Image.open has no per-call limit: it reads the module global. Raising it for one call is done under
# this lock, so two of our calls never restore each other's value.
_PIL_LIMIT_LOCK = threading.Lock()


def load_image(path: str | os.PathLike, max_pixels: int | None = None, limit_hint: str | None = None,
               size_check: Callable[[int, int], None] | None = None) -> Image.Image:
    """Open and fully decode an image file, with errors that name the file and the problem.

    ``max_pixels``: refuse images with more pixels than this (default: ``PIL.Image.MAX_IMAGE_PIXELS``,
    89,478,485 unless changed), before any pixel is decoded. ``limit_hint`` says in the error how to
    raise that limit (the caller's argument name). ``size_check(height, width)``, if given, may refuse
    the image too, also from its header alone. A failed allocation while decoding is a
    NotEnoughMemoryError naming the file and its size.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image file")
    limit = pil_pixel_limit() if max_pixels is None else max_pixels
    hint = limit_hint or (_PIL_HINT if max_pixels is None else "pass max_pixels=N")
    try:
        with _open_image(path, limit) as img:
            check_pixel_limit(img, path, limit, hint)
            if size_check is not None:
                size_check(img.height, img.width)
            try:
                img.load()  # decode now, so truncation and corruption surface here
                return img.copy() if img.mode in ("RGB", "RGBA", "L") else img.convert(_safe_mode(img))
            except MemoryError as e:
                raise NotEnoughMemoryError(f"{path}: not enough memory to decode its {img.width}x{img.height} "
                                           f"pixels ({img.width * img.height:,})", hint, PIXELS_FLAG) from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{path}: not a readable image file (unknown or corrupt format)") from e
    except (ImageError, MemoryError):
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from e


def pil_pixel_limit() -> int | None:
    """PIL.Image.MAX_IMAGE_PIXELS, read under the lock that ``_open_image`` lifts it under."""
    with _PIL_LIMIT_LOCK:
        return Image.MAX_IMAGE_PIXELS


def _open_image(path: Path, limit: int | None) -> Image.Image:
    """Image.open (the header only) leaving the size check to ``check_pixel_limit``, at ``limit``.

    PIL checks its global limit itself only above twice it, with an error that cites that doubled
    figure. So where ``limit`` is above PIL's or PIL refuses first, the file is opened with PIL's
    check lifted (under a lock, restored after), and the one error a user sees cites ``limit``.
    """
    pil_limit = pil_pixel_limit()
    if limit is not None and pil_limit is not None and limit <= pil_limit:
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            pass  # over twice PIL's limit: reopen, so that check_pixel_limit reports the real size
    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def check_pixel_limit(img: Image.Image, path: str | os.PathLike, limit: int | None = None,
                      hint: str = _PIL_HINT) -> None:
    """Refuse an opened (not yet decoded) image above ``limit`` pixels (default PIL.Image.MAX_IMAGE_PIXELS).

    PIL refuses only above 2x MAX_IMAGE_PIXELS and merely warns between 1x and 2x; such an image
    still becomes a float tensor of 12 bytes per pixel (gigabytes), so refuse it at 1x. Inference,
    encode-dataset and training all call this, so they accept the same files.
    """
    limit = pil_pixel_limit() if limit is None else limit
    if limit and img.width * img.height > limit:
        raise PixelLimitError(f"{path}: image is too large to decode safely ({img.width}x{img.height} = "
                              f"{img.width * img.height:,} pixels, limit {limit:,})", hint, PIXELS_FLAG)


def read_image_file(path: str | os.PathLike, max_pixels: int | None = None, limit_hint: str | None = None,
                    size_check: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """load_image + pil_to_tensor, with every error naming the file."""
    img = load_image(path, max_pixels, limit_hint, size_check)
    try:
        return pil_to_tensor(img)
    except ImageError as e:  # e.g. NaN in a float TIFF: say which file
        raise ImageError(f"{path}: {e}") from e
    except MemoryError as e:
        raise NotEnoughMemoryError(f"{path}: not enough memory for its {img.width}x{img.height} pixels as float32 "
                                   f"({gib(12 * img.width * img.height)})", limit_hint or _PIL_HINT, PIXELS_FLAG) from e


def _safe_mode(img: Image.Image) -> str:
    # Modes whose conversion we handle later; keep them so alpha and 16-bit are treated properly.
    return img.mode if img.mode in ("LA", "P", "PA", "I;16", "I;16B", "I;16L", "I", "F", "CMYK", "YCbCr", "LAB", "HSV", "1") else "RGB"


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """Any PIL mode -> (3, H, W) float32 in [0, 1]. Transparency is composited over white."""
    if img.width == 0 or img.height == 0:
        raise ImageError(f"image has zero size ({img.width}x{img.height})")
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():  # float TIFFs can hold NaN/inf; clip would pass NaN through
            raise ImageError("image contains NaN or inf values")
        peak = 65535.0 if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255) else 255.0
        if mode == "F":
            peak = max(1.0, float(arr.max(initial=1.0)))
        arr = np.clip(arr / peak, 0.0, 1.0)
        return torch.from_numpy(np.ascontiguousarray(arr))[None].expand(3, -1, -1).contiguous()
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "PA", "La"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def _check_float(t: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(t).all():
        raise ImageError(f"{what} contains NaN or inf values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
        raise ImageError(f"{what} has values in [{lo:.4g}, {hi:.4g}]; float images must be in [0, 1] "
                         "(divide uint8 data by 255, or map [-1, 1] data with (x + 1) / 2)")
    return t.clamp(0.0, 1.0)


def _check_size(h: int, w: int, what: str) -> None:
    if h == 0 or w == 0:
        raise ImageError(f"{what} has zero size ({w}x{h})")


def array_to_tensors(arr: np.ndarray) -> list[torch.Tensor]:
    """numpy (H, W, 3) or (B, H, W, 3), uint8 (0..255) or float ([0, 1]) -> list of (3, H, W)."""
    shape = tuple(arr.shape)  # errors report the shape the caller passed, not the batched one
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ImageError(f"numpy images must be (H, W, 3) or (B, H, W, 3), got shape {shape}")
    _check_size(arr.shape[1], arr.shape[2], "numpy image")
    if arr.dtype == np.uint8:
        t = _from_numpy(arr, np.uint8).permute(0, 3, 1, 2).float().div_(255.0)
    elif np.issubdtype(arr.dtype, np.floating):
        t = _check_float(_from_numpy(arr, np.float32).permute(0, 3, 1, 2), "numpy image")
    else:
        raise ImageError(f"numpy images must be uint8 (0..255) or float ([0, 1]), got dtype {arr.dtype}")
    return list(t.contiguous())


def _from_numpy(arr: np.ndarray, dtype) -> torch.Tensor:
    """torch.from_numpy, copying read-only arrays (np.asarray(pil_image) is one) instead of warning."""
    arr = np.ascontiguousarray(arr, dtype=dtype)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def torch_to_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """(3, H, W) or (B, 3, H, W); float in [0, 1] or uint8 in 0..255 -> list of (3, H, W) float32."""
    shape = tuple(t.shape)  # errors report the shape the caller passed, not the batched one
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[1] != 3:
        hint = " (channels last? use tensor.permute(2, 0, 1))" if len(shape) == 3 and shape[-1] == 3 else ""
        raise ImageError(f"tensor images must be (3, H, W) or (B, 3, H, W), got shape {shape}{hint}")
    _check_size(t.shape[2], t.shape[3], "tensor image")
    t = t.detach().cpu()
    if t.dtype == torch.uint8:
        t = t.float().div(255.0)
    elif t.is_floating_point():
        t = _check_float(t.float(), "tensor image")
    else:
        raise ImageError(f"tensor images must be float ([0, 1]) or uint8 (0..255), got dtype {t.dtype}")
    return list(t)


def to_tensors(images: Any, max_pixels: int | None = None, limit_hint: str | None = None,
               size_check: Callable[[str, int, int], None] | None = None) -> tuple[list[torch.Tensor], bool]:
    """Normalise any accepted input to a list of (3, H, W) float tensors.

    Returns (tensors, batched): ``batched`` is False when the input was one image, so the caller
    returns an unbatched result. ``max_pixels`` and ``limit_hint`` apply to image files (load_image),
    and so does ``size_check(name, height, width)``, called from a file's header before decoding.
    """
    if isinstance(images, (str, os.PathLike)):
        check = None if size_check is None else functools.partial(size_check, str(images))
        return [read_image_file(images, max_pixels, limit_hint, check)], False
    if isinstance(images, Image.Image):
        return [pil_to_tensor(images)], False
    if isinstance(images, np.ndarray):
        _check_shape(images, -3, -2, size_check)
        return array_to_tensors(images), images.ndim == 4
    if isinstance(images, torch.Tensor):
        _check_shape(images, -2, -1, size_check)
        return torch_to_tensors(images), images.ndim == 4
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ImageError("got an empty list of images")
        out: list[torch.Tensor] = []
        for i, item in enumerate(images):
            if isinstance(item, (list, tuple)):
                raise ImageError(f"item {i} of the image list is itself a list; pass a flat list")
            check = size_check
            if size_check is not None and not isinstance(item, (str, os.PathLike)):  # arrays: name by list index
                def check(name: str, h: int, w: int, i: int = i) -> None:
                    size_check(f"image {i}", h, w)
            out.extend(to_tensors(item, max_pixels, limit_hint, check)[0])
        return out, True
    raise ImageError(f"cannot read an image from {type(images).__name__}; pass a path, PIL image, "
                     "numpy array or torch tensor (or a list of them)")


def _check_shape(array: Any, h_axis: int, w_axis: int, size_check: Callable[[str, int, int], None] | None) -> None:
    """size_check on an array's or tensor's (H, W) before it is converted to float32 (4x uint8)."""
    if size_check is not None and array.ndim in (3, 4):
        size_check("image 0", int(array.shape[h_axis]), int(array.shape[w_axis]))


# ---------------------------------------------------------------------------------------- native-size limit
#: How to raise the native-size limit from Python (the CLI names its flag, PIXELS_FLAG, instead).
NATIVE_HINT = "pass encode(..., max_native_pixels=N) or set tokenizer.max_native_pixels = N (None: no limit)"


def native_file_limit(limit: int | None) -> tuple[int | None, str]:
    """(max_pixels, limit_hint) for reading files at native size: PIL's limit, raised to ``limit``
    when that is larger, so raising the native limit is the one knob a user needs."""
    pil_limit = pil_pixel_limit()
    if limit is not None and pil_limit is not None and limit > pil_limit:
        return limit, NATIVE_HINT
    return None, NATIVE_HINT


def check_native_pixels(tensors: Sequence[torch.Tensor], factor: int, limit: int | None, images: Any = None,
                        memory: Callable[[int, int], int] | None = None) -> None:
    """Refuse any (3, H, W) image whose padded size (a multiple of ``factor``) exceeds ``limit`` pixels.

    The padded size is what the encoder and decoder process, so it is what bounds time and memory.
    ``images`` (the caller's input) only serves to name a file in the message; ``memory(h, w)``,
    if given, estimates the bytes a padded h x w image would need, for the message.
    """
    for i, t in enumerate(tensors):
        check_native_size(int(t.shape[1]), int(t.shape[2]), factor, limit, _input_name(images, i, len(tensors)), memory)


def check_native_size(h: int, w: int, factor: int, limit: int | None, name: str,
                      memory: Callable[[int, int], int] | None = None) -> None:
    """check_native_pixels for one image of h x w pixels, named ``name`` in the error."""
    ph, pw = -(-h // factor) * factor, -(-w // factor) * factor
    if limit is not None and ph * pw > limit:
        need = "" if memory is None else f"; encoding and decoding it takes about {gib(memory(ph, pw))} of memory"
        raise PixelLimitError(f"{name}: {w}x{h} image ({pw}x{ph} after padding to a multiple of {factor}, "
                              f"{ph * pw:,} pixels) is over the native-size limit of {limit:,} pixels{need}",
                              NATIVE_HINT, PIXELS_FLAG)


def _input_name(images: Any, i: int, count: int) -> str:
    """The file name of input ``i`` when the caller passed paths, else "image i"."""
    if isinstance(images, (str, os.PathLike)):
        return str(images)
    if isinstance(images, (list, tuple)) and len(images) == count and isinstance(images[i], (str, os.PathLike)):
        return str(images[i])
    return f"image {i}"


# ---------------------------------------------------------------------------------------- datasets
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


def list_image_files(source: str | os.PathLike) -> tuple[Path, list[str]]:
    """(root, paths relative to root) of a folder searched recursively, or of a list file.

    A list file has one path per line, relative to its own folder (absolute paths are kept); blank
    lines and lines starting with ``#`` are skipped. The order is fixed (sorted for a folder, as
    listed for a file), so training, evaluation and dataset shards see the same sequence everywhere.
    """
    source = Path(source)
    if source.is_dir():
        root = source
        files = sorted(p.relative_to(root).as_posix() for p in source.rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    elif source.is_file():
        root = source.parent
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"{source} is neither a folder nor a text list of image paths ({e})") from e
        files = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        raise FileNotFoundError(f"no image folder or list file at {source}")
    if not files:
        raise ValueError(f"{source} holds no images (looked for {sorted(IMAGE_SUFFIXES)})")
    return root, files


def list_image_paths(source: str | os.PathLike) -> list[Path]:
    root, files = list_image_files(source)
    return [root / f for f in files]


# ---------------------------------------------------------------------------------------- output
def to_output(batch: torch.Tensor, output_type: str) -> Any:
    """(B, 3, H, W) in [0, 1] -> list of PIL images, uint8 array (B, H, W, 3), or float tensor."""
    if output_type == "pt":
        return batch
    arr = batch.mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return arr
    if output_type == "pil":
        return [Image.fromarray(a) for a in arr]
    raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")


def side_by_side(images: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """Join images left to right on a white background (for original | reconstruction figures)."""
    h = max(i.height for i in images)
    w = sum(i.width for i in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    x = 0
    for im in images:
        canvas.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return canvas
