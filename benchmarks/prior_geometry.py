"""How spread out are the prior's word vectors, and the codebooks made from them?

    python benchmarks/prior_geometry.py [--prior DIR] [--models NAME_OR_DIR ...] [-o benchmarks/results/prior_geometry.json]

Three parts:
* the word vectors: language-model vectors against the random-prior ablation's;
* fresh transfer networks (three seeds, D = 64): the participation ratio and top-component share of
  the adjective and noun codes for each adjacency normalisation (``row``, the default, and ``sym``,
  the old one) and edge weighting;
* every trained model (all shipped weights, plus ``--models``): the same two figures for its
  exported adjective and noun codes.

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


def code_geometry(codes: torch.Tensor) -> dict[str, float]:
    from vqct_tokenizer.evaluation.geometry import participation_ratio, top_component_share

    return {"participation_ratio": participation_ratio(codes), "top_component_share": top_component_share(codes),
            "dims": codes.shape[1], "codes": codes.shape[0]}


def fresh_transfer(prior, dim: int = 64, seeds: int = 3) -> list[dict]:
    """Fresh transfer networks for each normalisation x edge weighting (no centring), and each
    normalisation x centring (count edges)."""
    from vqct_tokenizer.training.transfer import CodebookTransfer, normalized_adjacency, prepare_word_vectors

    words = torch.cat([prior.adjective_embeddings, prior.noun_embeddings])
    a, n = prior.num_adjectives, prior.num_nouns
    settings = [(norm, edge, "none") for norm in ("row", "sym") for edge in ("count", "log", "binary")]
    settings += [(norm, "count", center) for norm in ("row", "sym") for center in ("all", "pos")]
    rows = []
    for norm, edge, center in settings:
        adj = normalized_adjacency(prior.edge_index(), prior.edge_weight(), a, n, edge, norm)
        x = prepare_word_vectors(words, center, a)
        per_seed = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            codes = CodebookTransfer(x, dim, "gcn", adj).eval()().detach()
            per_seed.append((code_geometry(codes[:a]), code_geometry(codes[a:])))
        rows.append({"adjacency_norm": norm, "edge_weight": edge, "center_words": center, "seeds": seeds, "dim": dim,
                     **{f"{group}_{k}": sum(s[i][k] for s in per_seed) / seeds
                        for i, group in enumerate(("adjective", "noun"))
                        for k in ("participation_ratio", "top_component_share")}})
    return rows


def trained_models(extra: list[str]) -> list[dict]:
    from vqct_tokenizer import VQCTTokenizer
    from vqct_tokenizer.defaults import shipped_names

    rows = []
    for name in [*shipped_names(), *extra]:
        tok = VQCTTokenizer.from_pretrained(name)
        codes = tok.codebook.detach().float()
        row = {"model": name, "quantizer": tok.config.quantizer}
        for g in tok.config.groups:
            row[g.name] = code_geometry(codes[g.code_start:g.code_end])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    from vqct_tokenizer.codebook.prior import default_prior_path, load_prior

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", help="prior folder (default: the shipped prior)")
    parser.add_argument("--seed", type=int, default=0, help="run.seed of the random-prior run")
    parser.add_argument("--models", nargs="*", default=[], help="more tokenizer folders or names to measure")
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
    report["fresh_transfer"] = fresh_transfer(prior)
    print("\nfresh transfer network (mean of 3 seeds, D=64): participation ratio / top-component share")
    for r in report["fresh_transfer"]:
        print(f"  adjacency {r['adjacency_norm']:<4} edges {r['edge_weight']:<7} centre {r['center_words']:<5} adjectives "
              f"{r['adjective_participation_ratio']:5.1f} / {r['adjective_top_component_share']:.3f}   nouns "
              f"{r['noun_participation_ratio']:5.1f} / {r['noun_top_component_share']:.3f}")
    report["trained"] = trained_models(args.models)
    print("\ntrained models: participation ratio / top-component share of the exported codes")
    for r in report["trained"]:
        groups = [k for k in ("adjective", "noun", "code") if k in r]
        print(f"  {r['model']:<24} " + "   ".join(
            f"{g} {r[g]['participation_ratio']:5.1f} / {r[g]['top_component_share']:.3f} (of {r[g]['dims']} dims)"
            for g in groups))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
