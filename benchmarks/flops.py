"""Compute per call and what the CPU can do (throughput.py's GFLOPs columns): FLOPs of one call,
and the GFLOP/s of a large dense convolution as the reference peak."""

from __future__ import annotations

import statistics
import time
from typing import Any

CONV_SHAPE = {"batch": 8, "channels": 256, "size": 64}


def count_gflops(fn: Any, arg: Any) -> float:
    """GFLOPs of one call, with CPU flash attention counted (torch's table lacks it)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def cpu_sdpa_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
        b, h, s_q, d = q_shape
        s_k, d_v = k_shape[-2], v_shape[-1]
        return 2 * b * h * s_q * d * s_k + 2 * b * h * s_q * s_k * d_v  # QK^T and (softmax)V

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = cpu_sdpa_flops
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn(arg)
    return counter.get_total_flops() / 1e9


def conv_peak(threads: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Median GFLOP/s of a large dense 3x3 convolution: what this CPU does on the network's main op."""
    import torch

    torch.set_num_threads(threads)
    b, c, s = CONV_SHAPE["batch"], CONV_SHAPE["channels"], CONV_SHAPE["size"]
    conv = torch.nn.Conv2d(c, c, 3, padding=1)
    x = torch.randn(b, c, s, s, generator=torch.Generator().manual_seed(0))
    gflop = 2 * b * c * c * 9 * s * s / 1e9
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            conv(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    med = statistics.median(times)
    return {"gflop_per_call": gflop, "times": times, "gflops_per_s": gflop / med, "best_gflops_per_s": gflop / min(times)}
