"""How spread out are the prior's word vectors? Language-model vectors against the random-prior ablation's.

    python benchmarks/prior_geometry.py [--prior DIR] [-o benchmarks/results/prior_geometry.json]

The random-prior variant (``faces64-randomprior``) feeds the GCN frozen Gaussian vectors of the same
shape and average norm (seeded as in training: run.seed + 12345). This prints, for both sets, the
mean pairwise cosine similarity and the participation ratio of the centred, L2-normalised vectors
((Σσ²)² / Σσ⁴ over their singular values: about how many dimensions they really use).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def geometry(vectors: torch.Tensor) -> dict[str, float]:
    x = vectors.double()
    x = x / x.norm(dim=1, keepdim=True)
    cos = x @ x.T
    off_diagonal = cos[~torch.eye(len(x), dtype=torch.bool)]
    s2 = torch.linalg.svdvals(x - x.mean(0)) ** 2
    return {"mean_pairwise_cosine": float(off_diagonal.mean()),
            "participation_ratio": float(s2.sum() ** 2 / (s2 ** 2).sum()),
            "dims": x.shape[1], "words": x.shape[0]}


def main(argv: list[str] | None = None) -> int:
    from vqct_tokenizer.codebook.prior import default_prior_path, load_prior

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", help="prior folder (default: the shipped prior)")
    parser.add_argument("--seed", type=int, default=0, help="run.seed of the random-prior run")
    parser.add_argument("-o", "--output")
    args = parser.parse_args(argv)
    prior = load_prior(args.prior or default_prior_path())
    words = torch.cat([prior.adjective_embeddings, prior.noun_embeddings])
    g = torch.Generator().manual_seed(args.seed + 12345)
    random = torch.randn(words.shape, generator=g)
    report = {"prior": str(args.prior or "shipped default"), "text_encoder": prior.meta.get("text_encoder"),
              "language": geometry(words), "random": geometry(random)}
    for name in ("language", "random"):
        r = report[name]
        print(f"{name:<9} {r['words']} words x {r['dims']} dims: mean pairwise cosine {r['mean_pairwise_cosine']:.3f}, "
              f"participation ratio {r['participation_ratio']:.1f}")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
