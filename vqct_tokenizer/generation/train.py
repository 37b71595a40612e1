"""Train a TokenGenerator on a token dataset of ``vqct encode-dataset``, with the trainer's conventions.

One process:   vqct train-generator tokens/ -o runs/gen --steps 2000
DDP:           torchrun --standalone --nproc_per_node=8 -m vqct_tokenizer train-generator tokens/ -o runs/gen
Resume:        the same command with --resume

The run folder holds ``ckpt_XXXXXXXX.pt`` (everything needed to continue bit for bit on the same
hardware: weights, optimizer, step, RNG states; the data position is a function of the step),
``generator/`` (the latest weights, what ``vqct sample`` reads), ``metrics.jsonl``, ``run.json`` and,
with captions, ``captions.safetensors`` (their embeddings, computed once). ``batch_size`` is the
global batch, split over the ranks. The data order is the trainer's ResumableSampler; which caption
of an image a sample gets, and whether it is dropped for classifier-free guidance, are functions of
(seed, epoch, position) too, so they do not depend on the number of ranks or on interruptions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..errors import TokenError
from ..runtime import progress_bar
from ..tokens import load_token_dataset
from ..training.checkpoint import find_latest, load_checkpoint, save_checkpoint
from ..training.data import ResumableSampler
from ..training.schedule import learning_rate, set_learning_rate
from ..training.trainer import _Logger, _rng_state, _time_is_up, _truncate_metrics, resolve_precision, \
    setup_distributed
from .captions import CaptionTable, captions_per_image, read_captions, tokenizer_text_encoder
from .model import GeneratorConfig, TokenGenerator
from .settings import GENERATOR_DIR, RESUME_MAY_CHANGE, GeneratorTraining

CAPTION_CACHE = "captions.safetensors"
EVAL_CAPTION_CACHE = "eval_captions.safetensors"
def _settings(given: dict[str, Any], recorded: dict[str, Any] | None) -> GeneratorTraining:
    names = {f.name for f in dataclasses.fields(GeneratorTraining)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ValueError(f"unknown generator training settings {unknown}; known: {sorted(names)}")
    if recorded is None:
        opts = GeneratorTraining(**given)
    else:
        clash = [f"{k} {recorded.get(k)!r} (run) vs {v!r} (now)" for k, v in given.items()
                 if k not in RESUME_MAY_CHANGE and recorded.get(k) != v]
        if clash:
            raise ValueError(f"the run was started with other settings: {'; '.join(clash)}. Resume with the same "
                             "settings (or leave them out), or start a new run folder")
        opts = GeneratorTraining(**{**recorded, **given})
    opts.validate()
    return opts


def _dataset_record(ds) -> dict[str, Any]:
    paths = hashlib.sha256("\0".join(ds.paths).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return {"images": len(ds), "config_hash": ds.config_hash, "paths_hash": paths}


def load_grids(tokens: str | Path) -> tuple[Any, torch.Tensor]:
    """(dataset, every grid stacked (n, h, w, k+1) int32): a fixed-size token dataset, whole in memory."""
    ds = load_token_dataset(tokens)
    if ds.layout is None:
        raise TokenError(f"{tokens} records no token layout (a .npy file holds only ids); train on a token dataset "
                         "folder of `vqct encode-dataset`, or a .pt/.json file of `vqct encode`")
    if ds.layout.get("grid") is None:
        GeneratorConfig.from_layout(ds.layout)  # the error that explains native-size datasets
    if len(ds) == 0:
        raise ValueError(f"{tokens} holds no encoded images")
    return ds, torch.stack([g.to(torch.int32) for g in ds])


def _caption_table(captions: str | Path | None, ds, spec: str, normalize: bool, cache: Path | None, is_main: bool,
                   world: int, progress: bool) -> CaptionTable | None:
    if captions is None:
        return None
    per_image = captions_per_image(read_captions(captions), ds.paths, str(captions))
    table = None
    if is_main:  # rank 0 embeds; the others read its cache
        table = CaptionTable.build(per_image, spec, normalize, cache, progress=progress)
    if world > 1:
        dist.barrier()
        if not is_main:
            table = CaptionTable.build(per_image, spec, normalize, cache, progress=False)
    return table


def _param_groups(model: TokenGenerator, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (linear weights, embedding tables); none on biases, norms, positions."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.endswith("_pos")]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and not n.endswith("_pos"))]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _restore_rng(rng: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))


def caption_batch(table: CaptionTable | None, items: list[tuple[int, int]], dropout: float,
                  device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(embeddings (B, D), use (B,) bool) for sampled (image, seed) pairs: one of the image's captions,
    or none (dropped with probability ``dropout``, or the image has none)."""
    if table is None:
        return None, None
    rows, use = [], []
    for image, seed in items:
        rng = random.Random(seed)
        own = table.of(image)
        keep = len(own) > 0 and rng.random() >= dropout
        rows.append(int(own[rng.randrange(len(own))]) if keep else 0)
        use.append(keep)
    return table.embeddings[rows].to(device), torch.tensor(use, device=device)


@torch.no_grad()
def evaluate_bits(model: TokenGenerator, grids: torch.Tensor, table: CaptionTable | None = None,
                  batch_size: int = 64) -> dict[str, float]:
    """Mean negative log-likelihood in bits per image of ``grids`` (n, h, w, k+1). With captions:
    ``bits_per_image`` given each image's first caption (none if it has none) and
    ``bits_per_image_uncond`` given no caption."""
    device = model.device
    totals = {"bits_per_image": 0.0, **({"bits_per_image_uncond": 0.0} if table is not None else {})}
    for start in range(0, len(grids), batch_size):
        x = grids[start:start + batch_size].long().to(device)
        if table is None:
            totals["bits_per_image"] += float(model.bits_per_image(x).sum())
            continue
        first = [table.of(i) for i in range(start, start + len(x))]
        text = table.embeddings[[int(r[0]) if len(r) else 0 for r in first]].to(device)
        use = torch.tensor([len(r) > 0 for r in first], device=device)
        totals["bits_per_image"] += float(model.bits_per_image(x, text, use).sum())
        totals["bits_per_image_uncond"] += float(model.bits_per_image(x, text, torch.zeros_like(use)).sum())
    return {k: v / len(grids) for k, v in totals.items()}


def train_generator(tokens: str | Path, out_dir: str | Path, *, captions: str | Path | None = None,
                    settings: dict[str, Any] | None = None, resume: bool = False, max_steps: int | None = None,
                    max_minutes: float | None = None, eval_tokens: str | Path | None = None,
                    eval_captions: str | Path | None = None, progress: bool = True) -> Path:
    """Train (or continue, ``resume``) a generator on ``tokens``; returns the run folder.

    ``settings``: fields of GeneratorTraining (the rest keep their defaults, or on resume the run's
    values; changing any but RESUME_MAY_CHANGE is refused). ``max_steps`` / ``max_minutes`` stop
    this invocation early, with a checkpoint. ``eval_tokens`` (+ ``eval_captions``): a held-out
    token dataset whose bits per image are logged at every checkpoint.
    """
    given = dict(settings or {})
    rank, world, _, device = setup_distributed()
    is_main = rank == 0
    out = Path(out_dir)
    latest = find_latest(out) if resume else None
    if not resume and find_latest(out) is not None:
        raise ValueError(f"{out} already holds a generator run; pass --resume to continue it, or choose a new folder")
    # on the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest to the model's device
    state = load_checkpoint(latest, map_location="cpu") if latest is not None else None
    opts = _settings(given, state["settings"] if state else None)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if opts.batch_size % world:
        raise ValueError(f"batch_size {opts.batch_size} does not split evenly over {world} ranks")
    local_batch = opts.batch_size // world

    # ------------------------------------------------------------------ data and config
    ds, grids = load_grids(tokens)
    record = _dataset_record(ds)
    if state is not None and state["dataset"] != record:
        raise ValueError(f"{tokens} is not the token dataset this run was trained on (run: {state['dataset']}, "
                         f"now: {record}); resume with the same dataset")
    if state is not None:
        config = GeneratorConfig.from_dict(state["generator"])
        spec, normalize = config.text_encoder, config.text_normalize
        if config.conditional and captions is None:
            raise ValueError("this run is caption-conditioned: pass the same --captions file to resume it")
        if not config.conditional and captions is not None:
            raise ValueError("this run is unconditional: it was started without --captions")
    else:
        if opts.text_encoder is not None:
            spec, normalize = opts.text_encoder, True
        elif captions is not None:
            spec, normalize = tokenizer_text_encoder(ds.model)
        else:
            spec, normalize = None, False
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()
    table = _caption_table(captions, ds, spec, normalize, out / CAPTION_CACHE, is_main, world, progress)
    if state is None:
        tokenizer = {"model": ds.model, "config_hash": ds.config_hash,
                     "weights_hash": getattr(ds, "manifest", {}).get("weights_hash"), "layout": ds.layout}
        config = GeneratorConfig.from_layout(
            ds.layout, width=opts.width, depth=opts.depth, heads=opts.heads, mlp_ratio=opts.mlp_ratio,
            dropout=opts.dropout, text_dim=table.dim if table is not None else None,
            text_encoder=spec if table is not None else None, text_normalize=normalize and table is not None,
            caption_dropout=opts.caption_dropout if table is not None else 0.0, tokenizer=tokenizer)
    elif table is not None and table.dim != config.text_dim:
        raise ValueError(f"the captions embed to {table.dim} dimensions but the run's generator takes {config.text_dim}")
    eval_set = None
    if eval_tokens is not None and is_main:
        eval_ds, eval_grids = load_grids(eval_tokens)
        if eval_ds.config_hash != ds.config_hash or tuple(eval_grids.shape[1:]) != tuple(grids.shape[1:]):
            raise ValueError(f"{eval_tokens} holds tokens of another model or grid size than {tokens}")
        eval_table = _caption_table(eval_captions, eval_ds, spec, normalize, out / EVAL_CAPTION_CACHE, True, 1,
                                    progress) if config.conditional else None
        eval_set = (eval_grids, eval_table)

    # ------------------------------------------------------------------ model, optimizer, resume
    torch.manual_seed(opts.seed)
    random.seed(opts.seed)
    model = TokenGenerator(config).to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, opts.weight_decay), lr=opts.lr, betas=(0.9, 0.95),
                                  **({"fused": True} if device.type == "cuda" else {}))
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        _restore_rng(state["rng"], device)
        if is_main:
            print(f"resumed {latest} at step {step}")
            _truncate_metrics(out / "metrics.jsonl", step)
    elif resume and is_main:
        print(f"no checkpoint in {out}; starting from scratch")
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    precision = resolve_precision(opts.precision, device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext

    sampler = ResumableSampler(len(grids), opts.seed, rank, world)
    steps_per_epoch = sampler.per_rank // local_batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(grids)} grids is fewer than one batch of {opts.batch_size}")
    total = opts.steps if max_steps is None else min(opts.steps, step + int(max_steps))
    if is_main:
        run = {"tokens": str(tokens), "captions": None if captions is None else str(captions),
               "settings": dataclasses.asdict(opts), "generator": config.to_dict()}
        (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
        params = sum(p.numel() for p in model.parameters())
        cond = (f"captions of {table.captioned}/{len(grids)} images, {spec}" if table is not None else "unconditional")
        print(f"vqct train-generator: {out} | device {device} x{world} | precision {precision} | "
              f"{len(grids)} grids {tuple(grids.shape[1:])}, {config.seq_len} tokens each | {cond} | "
              f"{params / 1e6:.2f} M parameters | batch {opts.batch_size} | step {step} of {opts.steps}", flush=True)

    log = _Logger(out, is_main)
    bar = progress_bar(total, "train-generator", enabled=is_main and progress, initial=step)
    deadline = None if max_minutes is None else time.perf_counter() + 60.0 * float(max_minutes)
    t_last, seen = time.perf_counter(), 0
    model.train()
    while step < total:
        epoch, start = divmod(step, steps_per_epoch)
        sampler.set_position(epoch, start * local_batch)
        order = iter(sampler)
        for _ in range(start, steps_per_epoch):
            if step >= total:
                break
            items = [next(order) for _ in range(local_batch)]
            x = grids[[i for i, _ in items]].long().to(device)                    # (b, h, w, k+1)
            text, use = caption_batch(table, items, opts.caption_dropout, device)
            lr = learning_rate(step, opts.optim())
            set_learning_rate(optimizer, lr)
            with autocast():
                loss = net(x, text, use).mean()                                   # nats per token
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if opts.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
            optimizer.step()
            step += 1
            seen += len(items) * world
            bar.update(1)
            if deadline is not None and _time_is_up(deadline, device, world):
                total = step
            if step % opts.log_every == 0 or step == total:
                now = time.perf_counter()
                stats = {"step": step, "epoch": epoch, "loss": loss.item(),
                         "bits_per_image": loss.item() * config.seq_len / math.log(2), "lr": lr,
                         "grids_per_s": seen / (now - t_last)}
                t_last, seen = now, 0
                log.write(stats)
                bar.set_postfix(bits=f"{stats['bits_per_image']:.1f}")
            if (opts.ckpt_every and step % opts.ckpt_every == 0) or step == total:
                if is_main:
                    save_checkpoint(out, step, {
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "epoch": epoch, "settings": dataclasses.asdict(opts), "generator": config.to_dict(),
                        "dataset": record, "rng": _rng_state(device)}, keep=opts.keep)
                    model.save_pretrained(out / GENERATOR_DIR)
                    if eval_set is not None:
                        log.write({"step": step, **{f"eval_{k}": v for k, v in evaluate_bits(model, *eval_set).items()}})
                if world > 1:
                    dist.barrier()
    bar.close()
    log.close()
    return out


__all__ = ["GENERATOR_DIR", "GeneratorTraining", "RESUME_MAY_CHANGE", "caption_batch", "evaluate_bits", "load_grids",
           "train_generator"]
