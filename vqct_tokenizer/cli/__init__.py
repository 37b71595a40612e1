"""The ``vqct`` command line. Each subcommand lives in its own module with ``add_parser`` and ``run``.

Modules are imported only when their command runs, so ``vqct encode`` never imports nltk or the
training stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module under vqct_tokenizer.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "encode": ("tokens", "encode images to token grids (.npy, .pt or .json)"),
    "decode": ("tokens", "decode a token file to image(s)"),
    "reconstruct": ("tokens", "encode then decode an image at its own size; optionally save it beside the original"),
    "describe": ("tokens", "summarise the words of an image's tokens (--full: the whole word grid)"),
    "models": ("models", "list the shipped models and those in the Hugging Face cache, with size, f and layout"),
    "build-codebook": ("build_codebook", "mine captions and embed words into a codebook prior"),
    "train": ("train", "train a VQCT model (or a baseline) from a config"),
    "export": ("export", "export a training checkpoint to a slim tokenizer folder"),
    "eval": ("evaluate", "measure reconstruction quality and codebook usage"),
    "encode-dataset": ("encode_dataset", "tokenize a whole dataset into resumable shards"),
    "train-generator": ("generator", "train a GPT-style generator on a tokenized dataset (optionally caption-conditioned)"),
    "sample": ("generator", "sample images from a trained generator into a PNG grid"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only ``command``'s module is imported (all of them when None)."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="vqct", description="VQCT image tokenizer")
    parser.add_argument("--version", action="version", version=f"vqct-tokenizer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if command is None or name == command:
            # argument definitions are cheap to import; heavy imports happen inside run()
            importlib.import_module(f".{module}", __name__).add_arguments(name, p)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed. KEY=VALUE overrides may come on either side of a flag (``vqct train --config C
    a.b=1 --resume c.d=2``): argparse alone takes a positional list only once and rejects the rest."""
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    module = importlib.import_module(f".{args._module}", __name__)
    try:
        return int(module.run(args) or 0)
    except (ValueError, OSError, RuntimeError, MemoryError) as e:
        # user errors are reported in one line; tracebacks are for bugs. A size-limit error names the
        # command-line flag that raises the limit, not the Python argument or PIL global; so does a
        # NotEnoughMemoryError, for the limit to lower.
        if hasattr(e, "cli_message"):
            message = e.cli_message()
        elif isinstance(e, MemoryError):  # an allocation outside the places that name their limit
            message = f"not enough memory ({str(e) or 'MemoryError'}); free memory or give the command less input"
        else:
            message = str(e)
        print(f"vqct {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
