"""Encoder precision paths for inference: ``precision="fp32"`` (default), ``"fast"`` and ``"bf16"``.

``VQCTTokenizer.from_pretrained(name, precision=...)``, ``tok.precision = ...`` or
``tok.encode(images, precision=...)`` choose how the encoder runs; the decoder is not affected.

* ``"fp32"`` (default): the reference. The model as loaded (float32 unless ``dtype=`` said otherwise),
  eager; the tokenizer keeps its weights channels-last, as training runs them, so oneDNN does not
  reorder at every conv (tokens identical to a default-layout encoder but for near-ties: 99.998 % on
  640x427 photos, ``benchmarks/throughput_cpu.py``).
* ``"fast"``: float32 arithmetic throughout. A channels-last copy of the encoder and ``quant_conv``,
  compiled with the quantizer into one graph by ``torch.compile`` (inductor, weights frozen into the
  graph: oneDNN weight prepacking and conv + activation fusion on CPU). The first call for each
  input shape compiles (tens of seconds on a CPU; inductor caches the result on disk for later
  processes), so it pays off for datasets and large batches, not for a single image. Tokens differ
  from ``"fp32"`` only where a latent sits on a near-exact tie between two codes: with vqct-faces64,
  99.97 % identical tokens on the 1,000 faces256 test images and 99.96 % on the 200 open test images
  (fp32 at batch 1 against fp32 at batch 50 differs as much: 99.97 %); 100 % with vqgan-faces64. If
  compilation fails (no C++ compiler, no Triton for the GPU, an unsupported op) the path warns once
  and runs the same copy eagerly: channels-last float32, still faster than ``"fp32"`` on CPU.
  ``VQCT_FAST_COMPILE=0`` in the environment skips compilation.
* ``"bf16"``: the encoder trunk (everything before the last norm and conv) in bfloat16,
  channels-last, eager; norm_out, conv_out and ``quant_conv`` in float32. Fastest on CPUs with
  AMX-BF16 and on GPUs, but how many tokens match ``"fp32"`` depends on the codebook: 94.6 % (faces256
  test) and 95.6 % (open test) with vqct-faces64, 99.7 % with vqgan-faces64. VQCT's word codebook is
  dense around the latents (the median gap between the nearest and the second-nearest code is about
  1 % of the distance to the nearest; 1 % of cells have gaps under 1e-4 of it), and bfloat16's 8-bit
  mantissa moves latents by 0.2-0.3 % (relative), past many of those gaps.

In every path the latent reaches the quantizer as float32 and nearest-code distances are computed in
float32 (``models.quantizer.nearest_codes``).

The fast copies are built on first use from the current weights and rebuilt when the weights change
(in place, through ``load_weights`` or by ``.to(...)``): the cache key holds each source parameter's
storage, version counter, device and dtype.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

import torch
from torch import nn

PRECISIONS = ("fp32", "fast", "bf16")
DEFAULT_PRECISION = "fp32"
# VQCT_FAST_COMPILE=0: the "fast" path without torch.compile (channels-last float32, eager)
COMPILE_OPTIONS = {"freezing": True, "cpp_wrapper": True}
USE_COMPILE = os.environ.get("VQCT_FAST_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off")


def check_precision(precision: Any) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision


class FastEncoder(nn.Module):
    """image (B, 3, H, W) in [-1, 1] -> token ids, through a copy of the encoder: the trunk in
    ``trunk_dtype``, channels-last; the head, ``quant_conv`` and the quantizer in float32."""

    def __init__(self, encoder: nn.Module, quant_conv: nn.Module, quantizer: nn.Module,
                 trunk_dtype: torch.dtype) -> None:
        super().__init__()
        self.encoder = encoder
        self.quant_conv = quant_conv
        self.quantizer = quantizer  # no parameters: the model's own, shared
        self.trunk_dtype = trunk_dtype

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The float32 pre-quantization latent (B, G·D, h, w)."""
        # the dtypes are set here, not by an autocast context of the caller
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = self.encoder.forward_trunk(x.to(dtype=self.trunk_dtype, memory_format=torch.channels_last))
            # the head and quant_conv run in float32 in every path: latents as close to fp32 as the trunk allows
            return self.quant_conv(self.encoder.forward_head(h.float())).float()

    def forward(self, x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """LongTensor (B, h, w, Σk); nearest-code distances in float32 (compiled into the graph for "fast")."""
        z = self.latent(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.quantizer.encode(z, codebook.float())


def build_fast_encoder(model: nn.Module, precision: str) -> FastEncoder:
    """A detached copy of ``model.encoder`` and ``model.quant_conv`` for a non-reference precision."""
    check_precision(precision)
    if precision == "fp32":
        raise ValueError("precision 'fp32' runs the model itself; there is no copy to build")
    encoder = copy.deepcopy(model.encoder).float()
    quant_conv = copy.deepcopy(model.quant_conv).float()
    trunk_dtype = torch.float32
    if precision == "bf16":
        trunk_dtype = torch.bfloat16
        encoder.to(torch.bfloat16)
        encoder.norm_out.float()
        encoder.conv_out.float()
    module = FastEncoder(encoder, quant_conv, model.quantizer, trunk_dtype).to(memory_format=torch.channels_last)
    module.requires_grad_(False)
    return module.eval()


def weights_key(*modules: nn.Module) -> tuple:
    """Changes whenever a parameter of ``modules`` is replaced, edited in place or moved: the key of a
    cached copy (fast encoders, the bf16 decoder)."""
    return tuple((p.data_ptr(), p._version, p.device, p.dtype) for m in modules for p in m.parameters())


def _weights_key(model: nn.Module) -> tuple:
    return weights_key(model.encoder, model.quant_conv)


class _Runner:
    """One precision's copy, compiled for "fast" (with an eager fallback)."""

    def __init__(self, model: nn.Module, precision: str) -> None:
        self.precision = precision
        self.key = _weights_key(model)
        self.module = build_fast_encoder(model, precision)
        self.compiled = None
        if precision == "fast" and USE_COMPILE:
            # static shapes: one graph per input shape, each compiled on first use. Dynamic shapes
            # compile once for all batch sizes but measured slower than eager channels-last here.
            # freezing: weights become constants (oneDNN prepacked, conv + activation fused);
            # cpp_wrapper: the graph is called from C++, not Python (matters at small batches).
            # The quantizer is in the graph too: distance, argmin and top-k fused, ~7 % faster.
            self.compiled = torch.compile(self.module, dynamic=False, options=COMPILE_OPTIONS)

    def __call__(self, x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x, codebook)
            except Exception as e:  # noqa: BLE001 - any compile failure: fall back, the result is the same math
                warnings.warn(f"torch.compile of the fast encoder failed ({type(e).__name__}: {str(e)[:300]}); "
                              "running it eagerly (channels-last float32) from now on", RuntimeWarning, stacklevel=3)
                self.compiled = None
        return self.module(x, codebook)


class FastEncoders:
    """The tokenizer's cache of fast encoder copies, one per precision. Not part of the state dict,
    not pickled (a copy or unpickled tokenizer rebuilds them on first use)."""

    def __init__(self) -> None:
        self._runners: dict[str, _Runner] = {}

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._runners = {}

    def clear(self) -> None:
        self._runners.clear()

    def encode_ids(self, model: nn.Module, x: torch.Tensor, codebook: torch.Tensor, precision: str) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> token ids (B, h, w, Σk); for "fp32" exactly ``model.encode_ids``."""
        if check_precision(precision) == "fp32":
            return model.encode_ids(x, codebook)
        runner = self._runners.get(precision)
        if runner is None or runner.key != _weights_key(model):
            runner = self._runners[precision] = _Runner(model, precision)
        return runner(x.float(), codebook)
