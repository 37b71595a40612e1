"""``vqct train-generator`` and ``vqct sample``: a stage-2 generator over a token dataset.

    vqct encode-dataset images/ -o tokens/ --model vqct-faces64
    vqct train-generator tokens/ -o runs/gen --steps 2000 [--captions captions.tsv]
    vqct sample runs/gen -n 16 -o grid.png [--caption "a small yellow bird with black wings"]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

from .tokens import positive_int


def _setting_flags() -> list[tuple[str, str, type, object]]:
    """(flag, field, type, default) of every GeneratorTraining field."""
    from ..generation.settings import GeneratorTraining

    flags = []
    for f in dataclasses.fields(GeneratorTraining):
        default = f.default
        kind = str if f.name == "text_encoder" else type(default)
        flags.append((f"--{f.name.replace('_', '-')}", f.name, kind, default))
    return flags


SETTING_HELP = {
    "width": "transformer width", "depth": "transformer blocks", "heads": "attention heads",
    "mlp_ratio": "MLP width / width", "dropout": "dropout in the transformer",
    "steps": "optimizer steps of the whole run (the cosine schedule ends there)",
    "batch_size": "grids per step, over all ranks", "lr": "peak learning rate (AdamW)",
    "warmup_steps": "linear warm-up steps", "schedule": "constant or cosine", "min_lr_ratio": "cosine floor / lr",
    "weight_decay": "AdamW weight decay on matrices", "grad_clip": "gradient norm clip (0: off)",
    "caption_dropout": "share of samples trained without their caption (classifier-free guidance needs > 0)",
    "text_encoder": "caption encoder (default: the text encoder of the tokenizer's prior, else minilm)",
    "seed": "seed of weights, data order and caption draws", "precision": "fp32, bf16 (autocast) or auto",
    "log_every": "steps between metrics.jsonl lines", "ckpt_every": "steps between checkpoints (0: at the end only)",
    "keep": "checkpoints kept", "threads": "torch CPU threads (0: torch's default)",
}


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    from ..generation.settings import PRECISIONS
    from ..training.schedule import SCHEDULES

    if name == "train-generator":
        p.add_argument("tokens", metavar="TOKENS", help="a token dataset of `vqct encode-dataset` (its folder) or a "
                       "token file of `vqct encode`, at one grid size")
        p.add_argument("-o", "--output", required=True, type=Path, metavar="RUN",
                       help="run folder: checkpoints, metrics.jsonl and generator/ (what `vqct sample` reads)")
        p.add_argument("--captions", type=Path, default=None, metavar="FILE",
                       help="IMAGE_KEY<TAB>CAPTION lines (.gz too), keys as the dataset's manifest lists its images; "
                            "several lines per key allowed. Without it the generator is unconditional")
        p.add_argument("--resume", action="store_true", help="continue the latest checkpoint in RUN")
        p.add_argument("--max-steps", type=int, default=None,
                       help="stop this invocation after this many steps (the schedule still runs to --steps)")
        p.add_argument("--max-minutes", type=float, default=None,
                       help="stop this invocation after this many minutes, with a checkpoint (--resume continues)")
        p.add_argument("--eval-tokens", default=None, metavar="TOKENS",
                       help="a held-out token dataset: its bits per image go to metrics.jsonl at every checkpoint")
        p.add_argument("--eval-captions", type=Path, default=None, metavar="FILE", help="captions of --eval-tokens")
        p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
        group = p.add_argument_group("settings (on --resume: the run's own, unless given)")
        for flag, field, kind, default in _setting_flags():
            choices = {"schedule": SCHEDULES, "precision": PRECISIONS}.get(field)
            group.add_argument(flag, dest=f"set_{field}", type=kind, default=None, choices=choices,
                               metavar=None if choices else field.upper(),
                               help=SETTING_HELP.get(field, field) + (f" (default: {default})" if default is not None else ""))
    elif name == "sample":
        p.add_argument("generator", metavar="GENERATOR",
                       help="a run folder of `vqct train-generator`, or its generator/ folder")
        p.add_argument("--caption", default=None, help="sample images of this caption (caption-conditioned generators)")
        p.add_argument("-n", "--num", type=positive_int, default=16, help="how many images (default: 16)")
        p.add_argument("-o", "--output", required=True, type=Path, help="the PNG grid to write")
        p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 is greedy (default: 1)")
        p.add_argument("--top-k", type=int, default=0, help="draw from the K likeliest ids of each slot (default: 0 = all)")
        p.add_argument("--guidance", type=float, default=1.0,
                       help="classifier-free guidance scale with --caption (default: 1 = none; 2-4 follow the caption "
                            "more closely)")
        p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
        p.add_argument("--columns", type=positive_int, default=None, help="grid columns (default: about sqrt(n))")
        p.add_argument("--tokens-out", type=Path, default=None, metavar="FILE",
                       help="also write the sampled token grids (.pt, .json or .npy; `vqct decode` reads them)")
        p.add_argument("--model", default=None,
                       help="tokenizer to decode with (default: the one that encoded the generator's training tokens)")
        p.add_argument("--batch-size", type=positive_int, default=64, help="grids sampled at once (default: 64)")
        p.add_argument("--device", default="auto", help="torch device (default: cuda if available)")
    else:
        raise ValueError(f"vqct_tokenizer.cli.generator has no command {name!r}")


def run(args: argparse.Namespace) -> int:
    return run_train(args) if args.command == "train-generator" else run_sample(args)


# ---------------------------------------------------------------------------------------- train
def run_train(args: argparse.Namespace) -> int:
    from ..generation.train import train_generator
    from ..tokens import load_token_dataset
    from .outputs import check_output_folder

    settings = {k[len("set_"):]: v for k, v in vars(args).items() if k.startswith("set_") and v is not None}
    if args.captions is None and "text_encoder" in settings:
        raise ValueError("--text-encoder embeds captions: it needs --captions")
    if args.eval_captions is not None and args.eval_tokens is None:
        raise ValueError("--eval-captions needs --eval-tokens")
    load_token_dataset(args.tokens)  # a missing or broken dataset is reported before anything is written
    if not args.resume:
        check_output_folder(args.output, False, "generator run")
    out = train_generator(args.tokens, args.output, captions=args.captions, settings=settings, resume=args.resume,
                          max_steps=args.max_steps, max_minutes=args.max_minutes, eval_tokens=args.eval_tokens,
                          eval_captions=args.eval_captions, progress=args.progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"done: {out} (sample with: vqct sample {out} -o grid.png)")
    return 0


# ---------------------------------------------------------------------------------------- sample
def generator_folder(path: str | Path) -> Path:
    """A generator folder, given it or the run folder that holds it."""
    from ..generation.model import CONFIG_NAME
    from ..generation.settings import GENERATOR_DIR

    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / GENERATOR_DIR / CONFIG_NAME).is_file():
        return path / GENERATOR_DIR
    raise FileNotFoundError(f"{path} is neither a run folder of `vqct train-generator` nor a generator folder "
                            f"(no {GENERATOR_DIR}/{CONFIG_NAME} or {CONFIG_NAME} in it)")


def run_sample(args: argparse.Namespace) -> int:
    import torch

    from ..generation.model import TokenGenerator
    from ..runtime import resolve_device
    from .outputs import check_image_output, save_image

    if args.output.suffix == "":
        raise ValueError(f"-o {args.output}: give an image file name for the grid, e.g. grid.png")
    check_image_output(args.output)
    if args.tokens_out is not None:
        from ..tokens.files import token_suffix

        token_suffix(args.tokens_out)
    if args.temperature < 0 or args.top_k < 0:
        raise ValueError(f"--temperature and --top-k must be >= 0, got {args.temperature} and {args.top_k}")
    device = resolve_device(args.device)
    gen = TokenGenerator.from_pretrained(generator_folder(args.generator), device=device)
    config = gen.config
    check_conditioning(config, args.caption, args.guidance)
    tok = _tokenizer_for(config, args.model, args.device)

    text = None
    if args.caption is not None:
        from ..generation.captions import embed_captions

        text = embed_captions([args.caption], config.text_encoder, config.text_normalize, device, progress=False)[0]
    rng = torch.Generator(device=device).manual_seed(args.seed)
    grids = torch.cat([gen.sample(min(args.batch_size, args.num - i), text, temperature=args.temperature,
                                  top_k=args.top_k, guidance=args.guidance, generator=rng).cpu()
                       for i in range(0, args.num, args.batch_size)])
    images = [im for i in range(0, len(grids), args.batch_size) for im in tok.decode(grids[i:i + args.batch_size])]
    save_image(image_grid(images, args.columns), args.output)
    if args.tokens_out is not None:
        _write_samples(args.tokens_out, grids, tok)
    what = f"caption {args.caption!r}" + (f", guidance {args.guidance:g}" if args.guidance != 1 else "") \
        if args.caption is not None else "no caption"
    print(f"wrote {args.output}: {len(images)} sample(s), {what}, temperature {args.temperature:g}"
          + (f", top-k {args.top_k}" if args.top_k else "") + f", seed {args.seed}"
          + (f"; tokens in {args.tokens_out}" if args.tokens_out is not None else ""))
    return 0


def check_conditioning(config, caption: str | None, guidance: float) -> None:
    """ValueError for a caption the generator cannot take, or none where it needs one."""
    if caption is not None and not config.conditional:
        raise ValueError("this generator is unconditional (trained without --captions): it cannot take --caption")
    if caption is not None and not caption.strip():
        raise ValueError("--caption is empty; leave it out to sample without a caption")
    if config.conditional and (caption is None or guidance != 1.0) and config.caption_dropout == 0:
        need = "sample without --caption" if caption is None else "use --guidance"
        raise ValueError(f"this generator was trained with every caption kept (caption_dropout 0), so it never learned "
                         f"the 'no caption' input that is needed to {need}; pass --caption, with --guidance 1")
    if caption is None and guidance != 1.0:
        raise ValueError("--guidance steers towards a caption: it needs --caption")


def _tokenizer_for(config, model: str | None, device: str):
    """The tokenizer that decodes the generator's tokens; ValueError when its layout differs."""
    from ..tokens.dataset_writer import _weights_hash
    from ..tokens.layout import layout_differences
    from .tokens import load_tokenizer

    recorded = config.tokenizer.get("model")
    name = model or recorded
    if name is None:
        raise ValueError("the generator does not record its tokenizer; pass --model")
    try:
        tok = load_tokenizer(name, device)
    except (OSError, ValueError) as e:
        if model is not None:
            raise
        raise type(e)(f"{e} (the tokenizer recorded in the generator; pass --model to use another)") from e
    layout = config.tokenizer.get("layout")
    differ = layout_differences(layout, tok.config.token_layout()) if isinstance(layout, dict) else []
    if differ:
        raise ValueError(f"the generator models tokens of {recorded!r}, whose layout differs from tokenizer {name!r} in "
                         f"{'; '.join(differ)} (generator vs tokenizer); decode with the tokenizer it was trained on")
    if config.tokenizer.get("config_hash") not in (None, tok.config.architecture_hash()) or \
            config.tokenizer.get("weights_hash") not in (None, _weights_hash(tok)):
        print(f"warning: tokenizer {name!r} is not the one that encoded the generator's training tokens ({recorded!r}): "
              "same layout, other network or weights, so the same ids decode to other images", file=sys.stderr)
    return tok


def image_grid(images, columns: int | None = None, gap: int = 2):
    """PIL images of one size in rows of ``columns`` (default: about sqrt(n)), on white."""
    from PIL import Image

    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    w, h = images[0].size
    canvas = Image.new("RGB", (columns * (w + gap) - gap, rows * (h + gap) - gap), (255, 255, 255))
    for i, im in enumerate(images):
        canvas.paste(im, ((i % columns) * (w + gap), (i // columns) * (h + gap)))
    return canvas


def _write_samples(path: Path, grids, tok) -> None:
    from ..tokens.files import StoredTokens, write_token_file

    write_token_file(path, StoredTokens(
        grids=list(grids), image_paths=[f"sample_{i:04d}" for i in range(len(grids))],
        image_sizes=[(grids.shape[1] * tok.downsample_factor, grids.shape[2] * tok.downsample_factor)] * len(grids),
        resized=True, model=str(tok.name_or_path), config_hash=tok.config.architecture_hash(),
        layout=tok.config.token_layout(tuple(grids.shape[1:3]))))
