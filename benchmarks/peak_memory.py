"""Peak memory of one implementation's encode or decode, in a fresh process (throughput.py's
memory measurement): peak RSS over a few calls minus the RSS with model and inputs loaded."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

from bench_common import FAST_IMPLS, build_callables, example_inputs


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> str:
    """Make the peak-RSS counter start from now; returns the method that will read it.

    Linux: writing 5 to /proc/self/clear_refs resets VmHWM (this process's peak RSS) to the current
    RSS. ``getrusage().ru_maxrss`` cannot be reset, and on Linux a child started by fork+exec starts
    with its parent's peak: in a subprocess of this (large) benchmark it would read the parent's peak.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        if _status_mib("VmHWM") is not None:
            return "VmHWM"
    except OSError:
        pass
    return "ru_maxrss"


def peak_rss_mib(method: str) -> float:
    if method == "VmHWM":
        return _status_mib("VmHWM")
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def current_rss_mib() -> float | None:
    return _status_mib("VmRSS")


def child_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak memory, in a fresh process holding one implementation: peak RSS over a few calls,
    minus the RSS with the model and inputs loaded."""
    import torch

    torch.set_num_threads(spec["threads"])
    from vqct_tokenizer import VQCTTokenizer

    tok = VQCTTokenizer.from_pretrained(spec["model"])
    fn = build_callables(tok, spec["impl"])[spec["op"]]
    if spec["impl"] == "diffusers":  # our copy of the networks is not used: drop it (the quantizer stays)
        tok.model.encoder = None
        tok.model.decoder = None
    images, ids = example_inputs(tok, spec["batch"], seed=spec["seed"])
    arg = images if spec["op"] == "encode" else ids
    first_call_growth = None
    if spec["impl"] in FAST_IMPLS:  # build (and compile) the fast copy before the counter starts
        before = current_rss_mib()
        with torch.inference_mode():
            fn(arg)
        gc.collect()
        after = current_rss_mib()
        first_call_growth = None if before is None or after is None else after - before
    gc.collect()
    method = reset_peak_rss()
    base = current_rss_mib() if method == "VmHWM" else peak_rss_mib(method)
    with torch.inference_mode():
        for _ in range(spec["calls"]):
            out = fn(arg)
            del out
    peak = peak_rss_mib(method)
    return {"method": method, "loaded_rss_mib": base, "peak_rss_mib": peak, "peak_rss_delta_mib": peak - base,
            "first_call_rss_growth_mib": first_call_growth}
