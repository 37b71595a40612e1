"""Tokens from half-precision stored weights against the float32 weights they came from.

    python benchmarks/half_weights.py --model vqct-open-f8 --data ../shared/data/open/test.txt \
        -o benchmarks/results/half_weights.json

Each storage variant is written with ``VQCTTokenizer.save_pretrained(dtype=..., max_shard_bytes=...)``
into a temporary folder and loaded back with ``from_pretrained`` (which upcasts to float32); every
image is encoded at the model's resolution (``tok.encode``, its own preprocessing) by the float32
original and by each variant, in float32 on the CPU. Reported per variant: the share of identical
token ids (every slot of every cell), of identical cells and of images whose whole grid is identical,
the PSNR between the float32 model's and the variant's decoding of the same float32 tokens (first
``--decode-images`` images; the decoder's own share of the change), the stored bytes, and the largest
absolute weight change. The shipping bar (issue 21) is >= 99.9 %
identical tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.image_io import list_image_paths

ENCODER = ("model.encoder", "model.quant_conv")
# name -> (dtype, tensors kept float32; None: none at all, not even the codebook)
VARIANTS = {
    "fp16": (torch.float16, ()),
    "fp16-codebook-fp16": (torch.float16, None),
    "bf16": (torch.bfloat16, ()),
    "fp16-encoder-fp32": (torch.float16, ENCODER),
}


def store(tok: VQCTTokenizer, folder: Path, dtype: torch.dtype, keep: tuple[str, ...] | None, shard: int) -> VQCTTokenizer:
    if keep is not None:
        tok.save_pretrained(folder, dtype=dtype, max_shard_bytes=shard, keep_float32=keep)
    else:  # the whole state dict cast, codebook included
        from vqct_tokenizer.model_files import save_sharded

        tok.save_pretrained(folder)
        (folder / "model.safetensors").unlink()
        save_sharded(tok.state_dict(), folder, dtype=dtype, max_shard_bytes=shard)
    return VQCTTokenizer.from_pretrained(folder)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def encode_all(tok: VQCTTokenizer, files: list[Path], batch: int) -> list[torch.Tensor]:
    out = []
    for i in range(0, len(files), batch):
        out.extend(tok.encode([str(f) for f in files[i:i + batch]], batch_size=batch))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vqct-open-f8")
    p.add_argument("--data", required=True, help="image folder or list file")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--decode-images", type=int, default=40)
    p.add_argument("--shard-mib", type=float, default=15.0)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("-o", "--output")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    ref = VQCTTokenizer.from_pretrained(args.model)
    files = list_image_paths(args.data)[: args.limit]
    ref_tokens = encode_all(ref, files, args.batch)
    grid = torch.stack(ref_tokens[: args.decode_images])
    ref_decoded = ref.decode(grid, output_type="pt", precision="fp32")  # storage, not decoder arithmetic
    report = {"model": args.model, "data": args.data, "images": len(files), "resolution": ref.config.resolution,
              "torch": torch.__version__, "shard_mib": args.shard_mib, "variants": {}}
    for name in args.variants:
        dtype, keep = VARIANTS[name]
        with tempfile.TemporaryDirectory() as tmp:
            half = store(ref, Path(tmp), dtype, keep, int(args.shard_mib * 2**20))
            stored = sum(f.stat().st_size for f in Path(tmp).glob("*.safetensors"))
            shards = sorted(f.name for f in Path(tmp).glob("*.safetensors"))
            change = max((half.state_dict()[k] - v).abs().max().item() for k, v in ref.state_dict().items()
                         if v.is_floating_point())
            # tokens depend on the encoder, quant_conv and the codebook alone: when those came back
            # bit for bit, the float32 tokens are the variant's (no second pass over the images)
            exact = all(torch.equal(half.state_dict()[k], v) for k, v in ref.state_dict().items()
                        if k == "codebook" or k.startswith(ENCODER))
            tokens = ref_tokens if exact else encode_all(half, files, args.batch)
            # the decoder's share: the same tokens decoded by both, on the first --decode-images
            decoded = psnr(ref_decoded, half.decode(grid, output_type="pt", precision="fp32"))
        same = [(a == b) for a, b in zip(ref_tokens, tokens)]
        report["variants"][name] = {
            "identical_tokens": sum(int(s.sum()) for s in same) / sum(s.numel() for s in same),
            "identical_cells": sum(int(s.all(-1).sum()) for s in same) / sum(s[..., 0].numel() for s in same),
            "identical_images": sum(bool(s.all()) for s in same) / len(same),
            "decode_psnr_vs_fp32_db": decoded, "encoder_bit_identical": exact, "stored_bytes": stored, "shards": shards, "max_abs_weight_change": change,
        }
        v = report["variants"][name]
        print(f"{name:<20} identical tokens {v['identical_tokens']:.4%}  cells {v['identical_cells']:.4%}  "
              f"images {v['identical_images']:.1%}  decode {decoded:.1f} dB  {stored / 2**20:.1f} MiB in {len(shards)} file(s)", flush=True)
    report["fp32_bytes"] = sum(v.numel() * v.element_size() for v in ref.state_dict().values())
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
