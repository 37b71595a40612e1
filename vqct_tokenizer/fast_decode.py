"""Decoder precision for inference: ``decode_precision="auto"`` (default), ``"fp32"`` or ``"bf16"``.

``tok.decode_precision = ...``, ``tok.decode(tokens, precision=...)`` or ``vqct decode/reconstruct
--decode-precision`` choose how token grids become pixels; tokens are never affected (the encoder
has its own ``precision``, see ``fast_encode``).

* ``"fp32"``: the model as loaded (float32 unless ``dtype=`` said otherwise): the reference.
* ``"bf16"``: a bfloat16 copy of ``post_quant_conv`` and the decoder; the code lookup stays float32
  and the pixels come back as float32. With vqct-open-f8 on 30 photos at 640x427 the 8-bit output
  is 57.2 dB from the float32 decode: 87.6 % of the values identical, none more than 2 levels apart,
  and PSNR against the original 23.43 dB against 23.42 (``benchmarks/throughput_cpu.py``).
* ``"auto"``: ``"bf16"`` where bfloat16 convolutions run natively (CUDA with bf16; CPUs with
  AMX-BF16 or AVX512-BF16, where decoding a 640x427 photo took 1.15 s against 2.26 s in float32),
  and only for a float32 model; ``"fp32"`` everywhere else. As PyTorch lets cuDNN use TF32 by
  default: a rounding difference nobody can see, for half the decode time. Pick ``"fp32"`` for
  output that is the same on every machine.

The bf16 copy is built on first use and rebuilt when the weights change, as the fast encoders are;
it carries no hooks, so hooks registered on ``tok.model`` see only float32 decodes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .fast_encode import weights_key
from .runtime import cpu_has_fast_bf16

DECODE_PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_DECODE_PRECISION = "auto"


def check_decode_precision(precision: object) -> str:
    if precision not in DECODE_PRECISIONS:
        raise ValueError(f"decode precision must be one of {', '.join(map(repr, DECODE_PRECISIONS))}, "
                         f"got {precision!r}")
    return str(precision)


def resolve_decode_precision(precision: str, device: torch.device, dtype: torch.dtype) -> str:
    """``"auto"`` -> ``"bf16"`` or ``"fp32"`` for a model on ``device`` in ``dtype`` (see the module notes)."""
    if check_decode_precision(precision) != "auto":
        return precision
    if dtype != torch.float32:
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


class _HalfDecoder(nn.Module):
    """ids -> image (B, 3, H, W) float32 through bfloat16 copies of post_quant_conv and the decoder."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.post_quant_conv = copy.deepcopy(model.post_quant_conv).to(torch.bfloat16)
        self.decoder = copy.deepcopy(model.decoder).to(torch.bfloat16)
        self.quantizer = model.quantizer  # no parameters: the model's own, shared
        for module in (*self.post_quant_conv.modules(), *self.decoder.modules()):
            # hooks on tok.model observe the model; deepcopy would give the copy whichever were there
            # when it was built, and removing them from the model would not remove these
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        self.to(memory_format=torch.channels_last).requires_grad_(False).eval()

    def forward(self, ids: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        z_q = self.quantizer.lookup(ids, codebook.float())  # float32 codes, then rounded once
        with torch.autocast(device_type=ids.device.type, enabled=False):
            return self.decoder(self.post_quant_conv(z_q.to(torch.bfloat16))).float()


class FastDecoders:
    """The tokenizer's cache of its bfloat16 decoder copy. Not in the state dict, not pickled."""

    def __init__(self) -> None:
        self._module: _HalfDecoder | None = None
        self._key: tuple | None = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._module, self._key = None, None

    def decode_ids(self, model: nn.Module, ids: torch.Tensor, codebook: torch.Tensor, precision: str) -> torch.Tensor:
        """ids (B, h, w, Σk) -> image (B, 3, h·f, w·f); ``precision`` already resolved ("fp32" or "bf16")."""
        if precision == "fp32":
            return model.decode_ids(ids, codebook)
        if precision != "bf16":
            raise ValueError(f"resolve decode precision {precision!r} first")
        key = weights_key(model.post_quant_conv, model.decoder)
        if self._module is None or self._key != key:
            self._module, self._key = _HalfDecoder(model), key
        return self._module(ids, codebook)
