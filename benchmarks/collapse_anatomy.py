"""Where a tokenizer's latent collapses, and what the decoder reads: the measurements behind README
"Latent collapse".

For each model, on the first ``--images`` open test photos at 256² (centre crops at native scale):

* the participation ratio (PR) and first-component share of the encoder's features at each stage:
  the trunk, after the last norm + SiLU, the encoder output z, and each group's pre-quantization
  latent (after the 1×1 quant_conv, and l2-normalised under the cosine lookup);
* the 1×1 quant_conv's singular values (is the projection itself rank-deficient?);
* per group, |cos| between the latent's first principal component and its mean, the spread along
  that component against the mean's norm (a signed length along one axis: "magnitude coding"), and
  the share of the codes' variance that lies along the same axis;
* PSNR of decoding the unquantized latent whole and cut to its top-k principal components per group.

    python benchmarks/collapse_anatomy.py --models vqct-open-f8 baseline-open-f8 [--data-root ../shared/data]
    python benchmarks/collapse_anatomy.py --models path/to/exported --tag r2   # any tokenizer folder

Writes benchmarks/results/collapse_anatomy.json (one entry per model and tag; reruns update entries).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.evaluation.evaluate import list_images
from vqct_tokenizer.evaluation.geometry import (cells, group_slices, participation_ratio, pc_truncation_psnr,
                                                top_component_share)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _cloud(x: torch.Tensor) -> dict[str, float]:
    return {"pr": round(participation_ratio(x), 3), "top_share": round(top_component_share(x), 4), "dims": x.shape[1]}


@torch.no_grad()
def anatomy(tok: VQCTTokenizer, photos: torch.Tensor) -> dict:
    m = tok.model.eval()
    trunk = m.encoder.forward_trunk(photos)
    head = F.silu(m.encoder.norm_out(trunk))
    z = m.encoder.conv_out(head)
    latent = m.encode_latent(photos)
    codes = m.quantizer.codes(tok.codebook).float()
    out: dict = {"stages": {"encoder_trunk": _cloud(cells(trunk)), "after_norm_out": _cloud(cells(head)),
                            "encoder_output_z": _cloud(cells(z))},
                 "z_variance_shares": [round(v, 4) for v in _shares(cells(z))[:6]],
                 "groups": {}}
    w = m.quant_conv.weight[:, :, 0, 0]
    for g, sl in zip(tok.config.groups, group_slices(tok.config).values()):
        part = cells(latent)[:, sl].float()
        mean = part.mean(dim=0)
        centred = part - mean
        pc1 = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        group_codes = codes[g.code_start:g.code_end]
        code_centred = group_codes - group_codes.mean(dim=0)
        sv = torch.linalg.svdvals(w[sl])
        out["groups"][g.name] = {
            "latent": _cloud(part),
            "quant_conv_singular_values_rel": [round(v, 3) for v in (sv / sv[0]).tolist()[:8]],
            "quant_conv_min_rel_singular_value": round((sv[-1] / sv[0]).item(), 4),
            "abs_cos_pc1_mean": round(abs((pc1 @ mean) / mean.norm().clamp_min(1e-12)).item(), 3),
            "mean_norm": round(mean.norm().item(), 3),
            "std_along_pc1": round((centred @ pc1).std().item(), 3),
            "codes_variance_share_along_latent_pc1": round(((code_centred @ pc1).pow(2).sum() / code_centred.pow(2).sum()).item(), 3),
            "codes": _cloud(group_codes),
        }
    out["pc_truncation_psnr"] = {k: round(v, 2) for k, v in pc_truncation_psnr(m, tok.config, photos, ks=(1, 2, 4, 8)).items()}
    return out


def _shares(x: torch.Tensor) -> list[float]:
    eig = torch.linalg.svdvals((x - x.mean(0)).double()).pow(2)
    return (eig / eig.sum()).tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vqct-open-f8", "baseline-open-f8"])
    p.add_argument("--tag", default="current", help="label of this measurement (e.g. the round of the weights)")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("VQCT_DATA", "../shared/data")))
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--out", type=Path, default=RESULTS / "collapse_anatomy.json")
    args = p.parse_args()
    torch.manual_seed(0)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.models:
        tok = VQCTTokenizer.from_pretrained(name)
        paths = list_images(args.data_root / "open" / "test.txt", args.images)
        photos = torch.stack([tok.preprocess(str(q), resize=True)[0][0] for q in paths])
        key = f"{Path(str(name)).name}@{args.tag}"
        results[key] = {"model": str(name), "tag": args.tag, "images": len(paths),
                        "config": {k: tok.config.to_dict()[k] for k in ("codebook_dim", "normalize_codes", "num_adjectives",
                                                                       "num_nouns", "num_codes", "quantizer")},
                        **anatomy(tok, photos)}
        g = results[key]["groups"]
        print(key, "| latent PR", " / ".join(f"{v['latent']['pr']:.2f}" for v in g.values()),
              "| z shares", results[key]["z_variance_shares"][:3], "| decode full / top-2:",
              results[key]["pc_truncation_psnr"]["full"], "/", results[key]["pc_truncation_psnr"]["top2"])
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
