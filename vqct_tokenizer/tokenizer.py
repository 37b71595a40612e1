"""The slim inference tokenizer: encoder, fixed transferred codebook, decoder and the word list.

No GCN, no language model, no nltk: a folder with ``config.json``, ``model.safetensors`` and
``vocab.json`` is all it needs. Image preprocessing is ``image_processor.ImageProcessor`` (shared with
training and evaluation); finding and checking a model folder is ``model_files``.

Token layout (dual quantizer, k adjectives per cell):

    tokens[..., i, j, :] = [adj_1, ..., adj_k, noun]     adj ids in [0, A), nearest first
                                                          noun id in [A, A+N)
    tok.vocab[id] is the word of any id.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write
from .config import CONFIG_NAME, VOCAB_NAME, WEIGHTS_NAME, ConfigError, VQCTConfig
from .defaults import DEFAULT_MODEL
from .errors import CellLimitError, ImageError, NotEnoughMemoryError, TokenError, is_out_of_memory
from .fast_decode import DEFAULT_DECODE_PRECISION, FastDecoders, check_decode_precision, resolve_decode_precision
from .fast_encode import DEFAULT_PRECISION, FastEncoders, check_precision
from .image_io import PIXELS_FLAG, to_output
from .image_processor import ImageProcessor
from .model_files import (check_state_dict, check_weights_header, default_vocab, hub_offline, index_name, one_line,
                          read_vocab, read_weights, resolve_model_dir, save_sharded, vocab_to_json, weights_file)
from .models import VQAutoencoder
from .refinement import check_refine_steps, refine_ids
from .tiling import decode_tiled, encode_tiled, native_memory_bytes

CODEBOOK_KEY = "codebook"
#: Default bound on one native-size image, in pixels after padding to a multiple of f: the one limit
#: of encode and decode of the same image. Tiling keeps the model's working memory to about one tile;
#: what grows with the image is the image and the tiled encoder's whole-image stage outputs (112 bytes
#: per pixel for vqct-open-f8). ``vqct reconstruct --native`` of 4096x3072 (a 12-megapixel photo)
#: then peaks at 1.9 GiB resident (2.4 GiB virtual), and 3000x2000 at 1.2 GiB (1.7), under a 3 GiB
#: ``ulimit -v`` (``benchmarks/tiling.py --parts memory``); ``native_memory_bytes`` estimates other
#: sizes and refusals quote it.
DEFAULT_MAX_NATIVE_PIXELS = 4096 * 3072
#: Native images wider or taller than ``DEFAULT_TILE_SIZE`` pixels are encoded and decoded in tiles;
#: decode tiles overlap by at least ``DEFAULT_TILE_OVERLAP`` pixels (rounded up to whole cells);
#: both chosen with ``benchmarks/tiling.py``. 640 px lets COCO-sized and most web images run whole
#: (faster than tiles, and exact); its peak memory on a 2048x1366 photo equals 512 px tiles' (1.0 GiB).
#: On a 1024x1024 photo (2x2 tiles), 64 px of overlap puts the tiled decode within 42.5 dB of the
#: whole one in the seam bands (32 px: 40.5 dB), and the bands score 0.31 dB below the rest of the
#: image (32 px: 0.63 dB), at the same speed.
DEFAULT_TILE_SIZE = 640
# refinement keeps a step's activations for its backward pass: batch images of one size up to this many
# pixels, the size of the largest image it takes alone (one tile)
REFINE_BATCH_PIXELS = DEFAULT_TILE_SIZE * DEFAULT_TILE_SIZE
# ... but not on a CPU, where six 256x256 photos per pass took 1.14x the time per photo of one at a time
# (2 cores; benchmarks/results/refine_batch_speed.json)
REFINE_BATCHES_ON_CPU = False
DEFAULT_TILE_OVERLAP = 64
CELLS_FLAG = "--max-cells"
#: How to change the one size limit from Python (the CLI names PIXELS_FLAG instead).
LIMIT_HINT = "pass max_native_pixels=N to encode/decode/reconstruct or set tokenizer.max_native_pixels = N"


class VQCTTokenizer(nn.Module):
    """Images <-> grids of word tokens.

    Args:
        config: architecture, codebook sizes and preprocessing.
        vocab: one word per codebook row (adjectives first, then nouns). Defaults to placeholders.

    Attributes bounding the work and memory of one image (set them to None to lift a bound):
        max_native_pixels: the one size limit, in pixels after padding to a multiple of f (default
            4096*3072): ``encode(resize=False)`` refuses larger images (image files and arrays
            from their size, before their pixels are converted), and ``decode`` refuses grids
            that would decode to larger images, so whatever native encode accepts, decode
            accepts. Refusals quote ``native_memory_bytes``; a failed allocation anyway is a
            NotEnoughMemoryError (a MemoryError) naming this limit.
        max_decode_cells: kept for older code: a separate decode bound in cells h*w, which wins over
            ``max_native_pixels`` when set; None (default) derives it from ``max_native_pixels``.
        tile_size: native images wider or taller than this many pixels (default 640, so that
            COCO-sized and most web images run whole, the fastest way; None: never)
            run tile by tile (``vqct_tokenizer.tiling``). Encode stays exact: GroupNorm gets the
            whole image's statistics and every kept cell its full receptive field, so the tokens
            are the whole image's (99.94 % of cells identical on a 1024x1024 photo, 100 % on 20
            photos in 128 px tiles; the rest float rounding at near-ties), for up to about twice
            the time (a partial pass per GroupNorm; an encoder with per-position norms,
            ``config.encoder_norm`` "layer", needs none); memory is one tile plus the encoder's
            whole-image stage outputs. Decode normalises each tile by its own statistics, as
            diffusers and Cosmos do, and blends neighbouring tiles linearly across their overlap:
            pixels differ from a whole decode by about 32 dB PSNR, with no seam (the band around
            seams is as close to the original as the rest).
        tile_overlap: the decode overlap in pixels (default 64), rounded up to whole cells.
    """

    max_native_pixels: int | None = DEFAULT_MAX_NATIVE_PIXELS
    max_decode_cells: int | None = None
    tile_size: int | None = DEFAULT_TILE_SIZE
    tile_overlap: int = DEFAULT_TILE_OVERLAP

    def __init__(self, config: VQCTConfig, vocab: Sequence[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.model = VQAutoencoder(config)
        # channels-last weights: oneDNN then runs every conv channels-last instead of reordering at
        # each one (the encoder ~1.3x faster on CPU). Training runs channels-last too
        # (run.channels_last); against a default-layout encoder, tokens differ only at near-ties
        # between codes (benchmarks/throughput_cpu.py).
        self.model.to(memory_format=torch.channels_last)
        self.register_buffer("codebook", torch.zeros(config.codebook_size, config.codebook_dim))
        self.vocab: list[str] = list(vocab) if vocab is not None else default_vocab(config)
        if len(self.vocab) != config.codebook_size:
            raise ConfigError(f"vocab has {len(self.vocab)} words, config needs {config.codebook_size}")
        self.name_or_path: str | None = None
        self._precision = DEFAULT_PRECISION
        self._fast = FastEncoders()  # fast encoder copies, built on first use (not in the state dict)
        self._decode_precision = DEFAULT_DECODE_PRECISION
        self._fast_decode = FastDecoders()  # the bfloat16 decoder copy, built on first use
        self.eval()

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.codebook.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.quant_conv.weight.dtype

    @property
    def precision(self) -> str:
        """How ``encode`` runs the encoder: "fp32" (default, the reference), "fast" (float32,
        channels-last, torch.compile) or "bf16" (bfloat16 trunk). See ``vqct_tokenizer.fast_encode``."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = check_precision(value)

    @property
    def decode_precision(self) -> str:
        """How ``decode`` runs the decoder: "auto" (default: bfloat16 where the hardware runs it
        natively and the model is float32, else "fp32"), "fp32" (the model as loaded, the same pixels
        on every machine) or "bf16". Tokens are never affected. See ``vqct_tokenizer.fast_decode``."""
        return self._decode_precision

    @decode_precision.setter
    def decode_precision(self, value: str) -> None:
        self._decode_precision = check_decode_precision(value)

    def resolved_decode_precision(self, precision: str | None = None) -> str:
        """"fp32" or "bf16": what ``decode`` would run here for ``precision`` (default the attribute)."""
        return resolve_decode_precision(self.decode_precision if precision is None else precision,
                                        self.device, self.dtype)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def tokens_per_cell(self) -> int:
        return self.config.tokens_per_cell

    # ------------------------------------------------------------------ encode
    @property
    def image_processor(self) -> ImageProcessor:
        """The preprocessing of ``config.json`` (resize mode, resampling, value range): the same
        object training, evaluation and dataset tokenization use; see ``vqct_tokenizer.image_processor``."""
        return ImageProcessor.from_config(self.config)

    def preprocess(self, images: Any, resize: bool = True, max_native_pixels: int | None = None
                   ) -> tuple[list[torch.Tensor], bool, list[tuple[int, int]]]:
        """Inputs -> list of (3, H', W') in [-1, 1], whether batched, original (H, W) of each."""
        limit = self.max_native_pixels if max_native_pixels is None else max_native_pixels
        return self.image_processor.preprocess(images, resize=resize, max_native_pixels=limit,
                                               memory=self.native_memory_bytes)

    def native_memory_bytes(self, height: int, width: int) -> int:
        """About how many bytes of memory encoding and decoding one native image of height x width
        (padded) pixels takes with the current tiles, model and runtime included (an estimate, for
        choosing ``max_native_pixels``; see ``tiling.native_memory_bytes``)."""
        params = sum(t.numel() * t.element_size() for t in self.state_dict().values())
        return native_memory_bytes(self.config, height, width, self.tile_size, params)

    @torch.inference_mode()
    def encode(self, images: Any, *, resize: bool = True, batch_size: int = 16,
               return_image_sizes: bool = False, max_native_pixels: int | None = None,
               precision: str | None = None, refine_steps: int = 0, progress: bool = False) -> Any:
        """Tokenize images.

        Args:
            images: a file path; a PIL image (any mode: alpha is composited over white, 16-bit and
                CMYK are converted); a numpy uint8 array (H, W, 3) or (B, H, W, 3) in 0..255 (float
                arrays in [0, 1]); a torch float tensor (3, H, W) or (B, 3, H, W) in [0, 1] (uint8
                tensors in 0..255); or a list of any of these, sizes mixed. Values outside the range
                raise ImageError.
            resize: True (default) resizes to ``config.resolution`` as config.json's ``resize_mode``
                says (``center_crop`` unless exported from a training run that cropped otherwise; see
                ``vqct_tokenizer.image_processor``). False keeps the native size, padding bottom/right
                to a multiple of the downsampling factor f; pass the original size to
                ``decode(image_size=...)`` (or use ``return_image_sizes``) to crop back.
            batch_size: images run through the encoder at a time.
            return_image_sizes: also return the original (H, W) of each image.
            max_native_pixels: with ``resize=False``, refuse (PixelLimitError) an image with more
                pixels after padding; default ``self.max_native_pixels`` (4096*3072). Image files up
                to this size are read even above PIL's own limit, and files over it are refused from
                their header. Pass the same value to ``decode`` (or set the attribute).
            precision: encoder path for this call, default ``self.precision``: "fp32" (the
                reference), "fast" (float32, compiled; first call per shape compiles) or "bf16"
                (bfloat16 trunk: 95 % identical tokens with vqct-faces64, 99.7 % with vqgan-faces64).
                Nearest-code distances are float32 in all three.
            refine_steps: 0 (default) returns the encoder's tokens. N > 1 searches N token grids per
                image by gradient descent on its latent against the frozen decoder and keeps the one
                that reconstructs it best in MSE, the encoder's own grid included, so never a worse
                one (``vqct_tokenizer.refinement``; docs/BENCHMARKS.md "Encode-time refinement"
                for what it buys). Each step is a decoder pass forwards and back: about 0.7 s for a
                256x256 image on two CPU cores. Runs in float32 on the model's own path, ``precision``
                aside, and only for images that decode in one piece (sides up to ``tile_size``);
                a 640x480 image took 2.9 GB. On a GPU, images of one size are refined together, up
                to ``batch_size`` and ``REFINE_BATCH_PIXELS`` (640x640) at a time, each searched on
                its own; on a CPU, where that measured slower, one at a time.
            progress: a progress bar over the refinement steps (one bar per pass).

        Native images larger than ``tile_size`` run tile by tile (see the class notes). A failed
        allocation is a NotEnoughMemoryError (a MemoryError) that names the limits to lower.

        Returns:
            LongTensor (h, w, k+1) for one image, (B, h, w, k+1) for a batch or list, on the model's
            device. With ``resize=False`` and mixed sizes, a list of (h_i, w_i, k+1) tensors.
        """
        precision = self.precision if precision is None else check_precision(precision)
        refine_steps = check_refine_steps(refine_steps)
        with self._memory_guard("encode", max_native_pixels):
            inputs, batched, sizes = self.preprocess(images, resize=resize, max_native_pixels=max_native_pixels)
            if refine_steps > 1:
                self.check_refinable(inputs)

                def run(x: torch.Tensor) -> torch.Tensor:
                    # images of one batch are refined independently (a summed loss, Adam per element)
                    return refine_ids(self.model, self.codebook, x.to(self.device, self.dtype), refine_steps,
                                      progress=progress)
            else:
                def run(x: torch.Tensor) -> torch.Tensor:
                    return self.encode_preprocessed(x, precision=precision)
            grids: list[torch.Tensor] = []
            start = 0
            while start < len(inputs):
                count = self._refine_batch(inputs[start], batch_size) if refine_steps > 1 else batch_size
                chunk = inputs[start:start + count]
                if len(chunk) > 1 and len({t.shape for t in chunk}) == 1:
                    grids.extend(run(torch.stack(chunk)))
                else:  # one image (no stacked copy), or native sizes differ: no padding to a common size
                    grids.extend(run(t[None])[0] for t in chunk)
                for i in range(start, min(start + count, len(inputs))):
                    inputs[i] = None  # each image's pixels go as soon as it is encoded
                start += count
        return self._collect(grids, batched, sizes, return_image_sizes)

    @staticmethod
    def _collect(grids: list[torch.Tensor], batched: bool, sizes: Any, return_image_sizes: bool) -> Any:
        if len({g.shape for g in grids}) == 1:
            out: Any = torch.stack(grids) if batched else grids[0]
        else:
            out = grids
        if return_image_sizes:
            return out, (sizes if batched else sizes[0])
        return out

    def _refine_batch(self, image: torch.Tensor, batch_size: int) -> int:
        """How many images of ``image``'s size to refine per pass."""
        if self.device.type == "cpu" and not REFINE_BATCHES_ON_CPU:
            return 1
        height, width = image.shape[-2:]
        return min(batch_size, max(1, REFINE_BATCH_PIXELS // (height * width)))

    def check_refinable(self, inputs: list[torch.Tensor]) -> None:
        """Refinement scores whole-image decodes: refuse, before any work, an image that decodes in tiles."""
        f = self.downsample_factor
        for t in inputs:
            h, w = int(t.shape[-2]), int(t.shape[-1])
            if self._tile_cells(-(-h // f) * f, -(-w // f) * f) is not None:  # as padded for encoding
                raise ImageError(f"refine_steps: a {h}x{w} image decodes tile by tile (tile_size {self.tile_size}), "
                                 "and refinement fits tokens to a whole-image decode; resize it, raise tile_size "
                                 "(memory grows with the image), or pass refine_steps=0")

    @torch.inference_mode()
    def encode_preprocessed(self, x: torch.Tensor, *, precision: str | None = None) -> torch.Tensor:
        """(B, 3, H, W) already in [-1, 1] (as from ``preprocess``) -> LongTensor (B, h, w, k+1).

        "fp32" runs the model in its own dtype (float32 unless loaded with ``dtype=``); "fast" and
        "bf16" run a cached copy of the encoder and always hand the quantizer a float32 latent.
        Images larger than ``tile_size`` (with H and W multiples of f, as ``preprocess`` pads them)
        are encoded one at a time, tile by tile, in the model's own dtype whatever ``precision``
        says: the same tokens as the whole image up to float rounding (see ``tiling.encode_tiled``).
        """
        precision = self.precision if precision is None else check_precision(precision)
        tile = self._tile_cells(int(x.shape[-2]), int(x.shape[-1]))
        if tile is not None:
            return torch.cat([encode_tiled(self.model, self.codebook, x[i:i + 1].to(self.device, self.dtype),
                                           self.downsample_factor, tile * self.downsample_factor)
                              for i in range(len(x))])
        if precision == "fp32":
            return self.model.encode_ids(x.to(self.device, self.dtype), self.codebook)
        return self._fast.encode_ids(self.model, x.to(self.device, torch.float32), self.codebook, precision)

    def _tile_cells(self, height: int, width: int) -> int | None:
        """The tile side in cells when an image of height x width pixels runs in tiles, else None."""
        if self.tile_size is None:
            return None
        f = self.downsample_factor
        tile = int(self.tile_size) // f
        if tile < 1:
            raise ValueError(f"tile_size {self.tile_size} is smaller than one cell ({f} pixels)")
        if height % f or width % f or (height <= tile * f and width <= tile * f):
            return None
        return tile

    @contextmanager
    def _memory_guard(self, action: str, max_native_pixels: int | None = None) -> Iterator[None]:
        """Turn a failed allocation (MemoryError, torch's RuntimeError) into a NotEnoughMemoryError
        that names the limits to lower."""
        try:
            yield
        except (MemoryError, RuntimeError) as e:
            if isinstance(e, NotEnoughMemoryError) or not is_out_of_memory(e):
                raise
            limit = self.max_native_pixels if max_native_pixels is None else max_native_pixels
            limit_text = "no limit" if limit is None else f"{limit:,} pixels"
            raise NotEnoughMemoryError(
                f"not enough memory to {action} at this size ({one_line(e)}); the native size limit is "
                f"{limit_text}, tiles are {self.tile_size} pixels", f"{LIMIT_HINT} (or a smaller tile_size)",
                PIXELS_FLAG) from e

    # ------------------------------------------------------------------ decode
    def check_tokens(self, tokens: Any) -> torch.Tensor:
        """Validate a token grid and return it as a LongTensor on the model's device."""
        if isinstance(tokens, np.ndarray):
            if not np.issubdtype(tokens.dtype, np.integer):
                raise TokenError(f"tokens must be integers, got numpy dtype {tokens.dtype}")
            tokens = torch.from_numpy(tokens.astype(np.int64))
        elif isinstance(tokens, (list, tuple)):
            try:
                tokens = torch.tensor(tokens)
            except (TypeError, ValueError) as e:
                raise TokenError(f"tokens list is not a rectangular grid of integers: {e}") from e
        if not isinstance(tokens, torch.Tensor):
            raise TokenError(f"tokens must be a tensor, numpy array or nested list, got {type(tokens).__name__}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TokenError(f"tokens must be integers, got dtype {tokens.dtype}")
        k1 = self.tokens_per_cell
        if tokens.ndim not in (3, 4):
            raise TokenError(f"tokens must be (h, w, {k1}) or (B, h, w, {k1}), got shape {tuple(tokens.shape)}")
        if tokens.shape[-1] != k1:
            raise TokenError(f"last dimension of tokens must be {k1} (ids per cell), got shape {tuple(tokens.shape)}")
        if tokens.numel() == 0:
            raise TokenError(f"token grid is empty: shape {tuple(tokens.shape)}")
        tokens = tokens.long()
        col = 0
        for g in self.config.groups:
            part = tokens[..., col:col + g.k]
            lo, hi = int(part.min()), int(part.max())
            if lo < g.code_start or hi >= g.code_end:
                bad = lo if lo < g.code_start else hi
                raise TokenError(f"token id {bad} out of range for {g.name} slots (columns {col}..{col + g.k - 1}): "
                                 f"valid ids are [{g.code_start}, {g.code_end})")
            col += g.k
        return tokens.to(self.device)

    @torch.inference_mode()
    def decode(self, tokens: Any, *, output_type: str = "pil", image_size: tuple[int, int] | None = None,
               batch_size: int = 16, max_native_pixels: int | None = None, max_cells: int | None = None,
               precision: str | None = None) -> Any:
        """Token grid(s) -> image(s).

        Args:
            tokens: (h, w, k+1) or (B, h, w, k+1) integer ids (tensor, numpy array or nested list),
                or a list of (h, w, k+1) grids of different sizes.
            output_type: "pil" (PIL.Image), "np" (uint8 (H, W, 3)) or "pt" (float (3, H, W) in [0, 1]).
            image_size: (H, W) to crop to, undoing the padding of ``encode(resize=False)``; for a
                list of grids, a list of sizes.
            max_native_pixels: refuse (CellLimitError) a grid whose image (h*f x w*f) would have
                more pixels: the same limit, and the same default (``self.max_native_pixels``), as
                native ``encode``, so one value governs both.
            max_cells: the older form of the bound, in cells h*w; wins over ``max_native_pixels``
                when given, as does ``self.max_decode_cells`` when set.
            precision: decoder path for this call, default ``self.decode_precision`` ("auto"):
                "fp32", "bf16" (a bfloat16 decoder copy: 8-bit pixels within 2 levels of "fp32",
                about twice as fast on CPUs with AVX512-BF16 or AMX) or "auto" (bf16 where that
                hardware is, else fp32).

        Grids larger than ``tile_size`` pixels decode tile by tile, blended linearly across the
        overlaps (see the class notes). A failed allocation is a NotEnoughMemoryError.

        Returns:
            One image for an (h, w, k+1) grid; a list (pil), a (B, H, W, 3) array (np) or a
            (B, 3, H, W) tensor (pt) for a batch.
        """
        if isinstance(tokens, list) and tokens and isinstance(tokens[0], (torch.Tensor, np.ndarray)) \
                and len({tuple(t.shape) for t in tokens}) > 1:
            sizes = image_size if image_size is not None else [None] * len(tokens)
            return [self.decode(t, output_type=output_type, image_size=s, batch_size=batch_size,
                                max_native_pixels=max_native_pixels, max_cells=max_cells, precision=precision)
                    for t, s in zip(tokens, sizes)]
        precision = self.resolved_decode_precision(precision)
        grid = self.check_tokens(tokens)
        self._check_cells(grid, max_cells, max_native_pixels)
        batched = grid.ndim == 4
        if not batched:
            grid = grid[None]
        f = self.downsample_factor
        tile = self._tile_cells(int(grid.shape[1]) * f, int(grid.shape[2]) * f)
        overlap = -(-int(self.tile_overlap) // f)  # whole cells, rounded up
        with self._memory_guard("decode", max_native_pixels):
            outs = []
            for start in range(0, grid.shape[0], batch_size):
                chunk = grid[start:start + batch_size]
                def run(ids: torch.Tensor) -> torch.Tensor:
                    return self._fast_decode.decode_ids(self.model, ids, self.codebook, precision)

                if tile is None:
                    x = run(chunk)
                else:
                    x = torch.cat([decode_tiled(run, chunk[i:i + 1], f, tile, overlap) for i in range(len(chunk))])
                outs.append(ImageProcessor.denormalize(x))
                del x
            images = outs[0] if len(outs) == 1 else torch.cat(outs)
            del outs
            if image_size is not None:
                h, w = image_size
                if h > images.shape[2] or w > images.shape[3]:
                    raise ValueError(f"image_size {image_size} is larger than the decoded {tuple(images.shape[2:])}")
                images = images[:, :, :h, :w]
            result = to_output(images, output_type)
        return result if batched else result[0]

    def reconstruct(self, images: Any, *, resize: bool = True, output_type: str = "pil",
                    max_native_pixels: int | None = None, precision: str | None = None,
                    decode_precision: str | None = None, refine_steps: int = 0, progress: bool = False) -> Any:
        """decode(encode(images)); with ``resize=False`` the output has each input's original size.
        ``max_native_pixels`` bounds both halves; ``precision`` is the encoder's, ``decode_precision``
        the decoder's (defaults: the attributes); ``refine_steps`` and ``progress`` go to ``encode``."""
        tokens, sizes = self.encode(images, resize=resize, return_image_sizes=True, max_native_pixels=max_native_pixels,
                                    precision=precision, refine_steps=refine_steps, progress=progress)
        kw: dict[str, Any] = {"output_type": output_type, "max_native_pixels": max_native_pixels,
                              "precision": decode_precision}
        if resize:
            return self.decode(tokens, **kw)
        if isinstance(tokens, list):
            return self.decode(tokens, image_size=sizes, **kw)
        if tokens.ndim == 4:
            if len(set(sizes)) == 1:
                return self.decode(tokens, image_size=sizes[0], **kw)
            return [self.decode(t, image_size=s, **kw) for t, s in zip(tokens, sizes)]
        return self.decode(tokens, image_size=sizes, **kw)

    def _check_cells(self, grid: torch.Tensor, max_cells: int | None, max_native_pixels: int | None = None) -> None:
        """Refuse a grid over the decode bound, before any work: ``max_cells`` (or the attribute
        ``max_decode_cells``) in cells where set, else the native size limit in pixels."""
        h, w = int(grid.shape[-3]), int(grid.shape[-2])
        f = self.downsample_factor
        cells = max_cells if max_cells is not None else (self.max_decode_cells if max_native_pixels is None else None)
        if cells is not None:
            if h * w > cells:
                raise CellLimitError(f"a {h}x{w} token grid ({h * w:,} cells) would decode to a {w * f}x{h * f} "
                                     f"image; the limit is {cells:,} cells",
                                     "pass decode(..., max_cells=N) or set tokenizer.max_decode_cells = N", CELLS_FLAG)
            return
        limit = self.max_native_pixels if max_native_pixels is None else max_native_pixels
        if limit is not None and h * w * f * f > limit:
            raise CellLimitError(f"a {h}x{w} token grid would decode to a {w * f}x{h * f} image ({h * w * f * f:,} "
                                 f"pixels), over the native-size limit of {limit:,} pixels", LIMIT_HINT, PIXELS_FLAG)

    # ------------------------------------------------------------------ words
    def describe(self, tokens: Any) -> Any:
        """The grid in words: for (h, w, k+1) a list of h rows of w strings like "pale smooth skin";
        for a batch, a list of such grids."""
        grid = self.check_tokens(tokens).cpu()
        if grid.ndim == 4:
            return [self.describe(g) for g in grid]
        return [[" ".join(self.vocab[i] for i in cell) for cell in row.tolist()] for row in grid]

    @staticmethod
    def format_grid(words: list[list[str]]) -> str:
        """A word grid as aligned text, one row per line."""
        width = max(len(w) for row in words for w in row)
        return "\n".join(" | ".join(w.ljust(width) for w in row) for row in words)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | os.PathLike, *, dtype: torch.dtype | None = None,
                        max_shard_bytes: int | None = None, keep_float32: Sequence[str] = ()) -> None:
        """Write config.json, the weights and vocab.json (each atomically).

        ``dtype`` (e.g. ``torch.float16``) stores the floating weights at that precision, except the
        codebook and the tensors or modules named in ``keep_float32`` (e.g. ``("model.encoder",
        "model.quant_conv")``), which keep theirs; ``from_pretrained`` upcasts them to float32. Half
        precision moves latents past near-ties between codes: with vqct-open-f8, an all-float16 store
        gives 99.59 % identical tokens on the 200 open test photos at 256², a float32 encoder 100 %
        (benchmarks/results/half_weights.json).
        ``max_shard_bytes`` splits the weights into
        ``model-0000i-of-0000N.safetensors`` files of at most that size with
        ``model.safetensors.index.json``; without it they are one ``model.safetensors``.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_sharded(state, path, dtype=dtype, max_shard_bytes=max_shard_bytes,
                     keep_float32=(CODEBOOK_KEY, *keep_float32))
        _remove_other_weights(path, sharded=max_shard_bytes is not None)
        atomic_write(path / CONFIG_NAME, lambda p: self.config.save(p))
        atomic_write(path / VOCAB_NAME, lambda p: Path(p).write_text(json.dumps(vocab_to_json(self.config, self.vocab), indent=1) + "\n"))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                        local_files_only: bool = False, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, allow_missing_vocab: bool = False,
                        precision: str = DEFAULT_PRECISION,
                        decode_precision: str = DEFAULT_DECODE_PRECISION) -> "VQCTTokenizer":
        """Load from a local folder, a shipped model name (e.g. ``"vqct-open-f8"``), or a Hub repo id.

        A folder without ``vocab.json`` is an error (its words would silently be placeholders such
        as "adj0"), unless ``allow_missing_vocab=True``.

        ``precision`` sets ``tok.precision``, the encoder path of ``encode``: "fp32" (default: the
        reference, in the weights' dtype, which ``dtype=`` sets as before), "fast" (float32,
        channels-last, ``torch.compile``; 99.97 % identical tokens with vqct-faces64) or "bf16"
        (bfloat16 trunk, float32 head; 95 % identical with vqct-faces64, 99.7 % with vqgan-faces64).
        See ``vqct_tokenizer.fast_encode``. ``decode_precision`` sets ``tok.decode_precision``
        ("auto", "fp32" or "bf16"; see ``vqct_tokenizer.fast_decode``).
        """
        precision = check_precision(precision)
        decode_precision = check_decode_precision(decode_precision)
        folder = resolve_model_dir(name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                                   local_files_only=local_files_only)
        config = VQCTConfig.load(folder / CONFIG_NAME)
        vocab = read_vocab(folder, config, name_or_path, allow_missing_vocab)
        weights = weights_file(folder)
        check_weights_header(weights, cls, config, vocab)  # before allocating the model
        tok = cls(config, vocab)
        tok.load_weights(weights)
        tok.name_or_path = str(name_or_path)
        tok.precision = precision
        tok.decode_precision = decode_precision
        if device is not None or dtype is not None:
            tok.to(device=device, dtype=dtype)
        return tok

    def load_weights(self, file: str | os.PathLike) -> None:
        """Load a safetensors file or a shard index (``model.safetensors.index.json``), half-precision
        tensors upcast to float32; any missing, unexpected or wrongly shaped key is an error."""
        state = read_weights(file)
        check_state_dict(state, self.state_dict(), str(file))
        self.load_state_dict(state, strict=True)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload VQCT tokenizer", revision: str | None = None) -> str:
        """Upload config, weights and vocab to a Hugging Face Hub model repo; returns the commit URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            with tempfile.TemporaryDirectory() as tmp:
                self.save_pretrained(tmp)
                info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message,
                                         revision=revision, repo_type="model")
        except Exception as e:  # offline, network, auth, quota: one line for the user (the cause stays chained)
            hint = ("HF_HUB_OFFLINE is set: unset it to upload" if hub_offline()
                    else "check your connection and token (huggingface-cli login or token=...)")
            raise OSError(f"could not push to {repo_id!r} on the Hugging Face Hub ({one_line(e)}); {hint}") from e
        return str(info)

    def extra_repr(self) -> str:
        c = self.config
        return (f"resolution={c.resolution}, f={c.downsample_factor}, quantizer={c.quantizer}, "
                f"codebook={c.codebook_size}x{c.codebook_dim}, tokens_per_cell={c.tokens_per_cell}")


def _remove_other_weights(folder: Path, sharded: bool) -> None:
    """Delete the weights layout just not written, so ``from_pretrained`` cannot pick a stale one."""
    index = folder / index_name("model")
    if not sharded:
        if index.is_file():
            index.unlink()
        for old in folder.glob("model-*-of-*.safetensors"):
            old.unlink()
    else:
        (folder / WEIGHTS_NAME).unlink(missing_ok=True)
        current = set(json.loads(index.read_text())["weight_map"].values())
        for old in folder.glob("model-*-of-*.safetensors"):
            if old.name not in current:
                old.unlink()
