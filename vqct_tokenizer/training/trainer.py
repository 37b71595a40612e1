"""VQCT training, top to bottom.

One CPU or GPU:
    vqct train --config faces64 data.train=../shared/data/faces256/train.txt
One node, 8 GPUs (the config's batch_size is the global batch, split evenly over ranks):
    torchrun --standalone --nproc_per_node=8 -m vqct_tokenizer train --config faces256
Several nodes (run on each node, same rendezvous):
    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=8 \\
        --rdzv_backend=c10d --rdzv_endpoint=$MASTER_ADDR:29500 -m vqct_tokenizer train --config faces256
Resume the latest checkpoint in run.out_dir:
    vqct train --config faces64 --resume

Each step: encoder -> VQCT quantizer over the codebook the transfer network produces now ->
decoder; loss = L1 + perceptual + codebook + beta·commitment (+ adaptive-weighted hinge GAN after
loss.disc_start); learned codebooks with EMA codes or dead-code restarts then update their codes
outside the gradient (training/learned_codebook.py); then one discriminator step. Checkpoints hold
everything needed to continue the same run bit for bit on the same hardware: models, optimizers,
scaler, step, RNG states, data position.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from ..evaluation.geometry import COLLAPSE_WARN_PR, LatentGeometry, collapsed_groups
from ..evaluation.plots import save_recon_grid
from ..evaluation.usage import UsageWindow
from ..runtime import cpu_has_fast_bf16, progress_bar, resolve_device
from .checkpoint import find_latest, load_checkpoint, save_checkpoint
from .data import ImageDataset, ResumableSampler
from .synthetic import plain_batch
from .discriminator import PatchDiscriminator
from .learned_codebook import LEARNED_OPTION_DEFAULTS
from .colour import ColourBalancedL1, colour_axes, sample_pixels
from .losses import adaptive_weight, hinge_d_loss, lowpass_loss, reconstruction_loss, spread_loss
from .model import build_model, resolve_prior_dir
from .perceptual import build_perceptual
from .schedule import WeightEMA, learning_rate, set_learning_rate


def setup_distributed() -> tuple[int, int, int, torch.device]:
    """(rank, world_size, local_rank, device) from torchrun's environment, or a single process."""
    if "RANK" not in os.environ:
        return 0, 1, 0, resolve_device("auto")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    device = resolve_device("auto", local_rank=local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, local, device


@dataclass
class _Run:
    """Everything one training process holds: the models, their optimizers and the run's settings."""
    cfg: dict[str, Any]
    out: Path
    rank: int
    world: int
    device: torch.device
    model: nn.Module              # VQCTTrainModel
    disc: nn.Module               # PatchDiscriminator
    perceptual: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: WeightEMA | None
    precision: str
    memory_format: torch.memory_format
    ddp_model: nn.Module = field(init=False)
    ddp_disc: nn.Module = field(init=False)
    colour_l1: ColourBalancedL1 | None = None   # loss.colour_balance > 0: set from the data in _build_data

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> Any:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else nullcontext()

    def wrap_ddp(self) -> None:
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp_model = DDP(self.model, device_ids=ids) if self.world > 1 else self.model
        self.ddp_disc = DDP(self.disc, device_ids=ids) if self.world > 1 else self.disc


@dataclass
class _StepResult:
    fwd: Any                      # ForwardOutput of the generator step
    loss: torch.Tensor
    rec_loss: torch.Tensor
    p_loss: torch.Tensor
    g_loss: torch.Tensor
    d_weight: torch.Tensor
    d_loss: torch.Tensor


def train(cfg: dict[str, Any], resume: bool = False, max_steps: int | None = None,
          max_minutes: float | None = None) -> Path:
    """Run (or continue) the training described by ``cfg``; returns the output folder.

    ``max_steps`` stops this invocation early (the run's schedule still says optim.steps); tests and
    time-boxed sessions use it. ``max_minutes`` stops it after that much wall time (counted from the
    first step, on rank 0's clock), with a checkpoint at the step where it stops; ``--resume`` continues.
    """
    run_cfg, optim_cfg = cfg["run"], cfg["optim"]
    r = _build_run(cfg)
    dataset, sampler, local_batch, steps_per_epoch = _build_data(cfg, r)
    step = _resume(r) if resume else 0
    r.wrap_ddp()
    if r.is_main:
        (r.out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        _print_header(r, len(dataset), step)

    log = _Logger(r.out, r.is_main)
    usage = UsageWindow(r.model.config, run_cfg["usage_window"])
    geometry = _window_geometry(r)
    total_steps = int(optim_cfg["steps"]) if max_steps is None else min(int(optim_cfg["steps"]), step + int(max_steps))
    bar = progress_bar(total_steps, "train", enabled=r.is_main, initial=step)
    deadline = None if max_minutes is None else time.perf_counter() + 60.0 * float(max_minutes)
    t_last, imgs_since = time.perf_counter(), 0
    r.model.train()
    r.disc.train()
    while step < total_steps:
        epoch, start = divmod(step, steps_per_epoch)
        for x in _epoch_loader(dataset, sampler, local_batch, epoch, start, r):
            if step >= total_steps or step // steps_per_epoch != epoch:
                break
            x = x.to(r.device, non_blocking=True).contiguous(memory_format=r.memory_format)
            lr = learning_rate(step, optim_cfg)
            set_learning_rate(r.opt_g, lr)
            set_learning_rate(r.opt_d, lr)
            disc_on = step >= cfg["loss"]["disc_start"] and cfg["loss"]["disc_weight"] > 0
            gan_on = disc_on and step >= cfg["loss"]["disc_start"] + cfg["loss"]["disc_warmup"]

            result = _generator_step(r, x, gan_on, _large_plain(cfg, step, r))
            _codebook_upkeep(r, result.fwd)
            result.d_loss = _discriminator_step(r, x, result.fwd.reconstruction, disc_on)
            r.scaler.update()

            step += 1
            if deadline is not None and _time_is_up(deadline, r.device, r.world):
                total_steps = step  # the log, image and checkpoint below see the last step
            imgs_since += x.shape[0] * r.world
            usage.update(result.fwd.ids)
            geometry.update(result.fwd.latent)
            bar.update(1)

            # ---------------- logging, images, checkpoints (rank 0 writes)
            last = step == total_steps
            if step % run_cfg["log_every"] == 0 or last:
                now = time.perf_counter()
                stats = {"step": step, "epoch": epoch, **_loss_stats(result), "lr": lr,
                         "img_per_s": imgs_since / (now - t_last), **usage.summary(),
                         **_geometry_stats(geometry.compute())}
                t_last, imgs_since, geometry = now, 0, _window_geometry(r)
                log.write(stats)
                _warn_if_collapsed(stats, r.is_main)
                bar.set_postfix(rec=f"{stats['rec']:.4f}", use_n=f"{stats.get('usage_noun', stats.get('usage_code', 0)):.2f}")
            if r.is_main and run_cfg["image_every"] and (step % run_cfg["image_every"] == 0 or last):
                real, fake = (t[:8].detach().float().cpu().add(1).div(2) for t in (x, result.fwd.reconstruction))
                save_recon_grid(real, fake, r.out / "images" / f"step_{step:08d}.png")
            if run_cfg["ckpt_every"] and (step % run_cfg["ckpt_every"] == 0 or last):
                _save(r, step, epoch)
    bar.close()
    log.close()
    return r.out


# ---------------------------------------------------------------------------------- set-up
def _build_run(cfg: dict[str, Any]) -> _Run:
    """Process group, output folder, seeded models, optimizers, precision and memory format."""
    run_cfg, optim_cfg, loss_cfg = cfg["run"], cfg["optim"], cfg["loss"]
    rank, world, _, device = setup_distributed()
    out = Path(run_cfg["out_dir"])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if run_cfg["threads"]:
        torch.set_num_threads(int(run_cfg["threads"]))
    if optim_cfg["batch_size"] % world:
        raise ValueError(f"optim.batch_size {optim_cfg['batch_size']} does not split evenly over {world} ranks")

    torch.manual_seed(run_cfg["seed"])
    random.seed(run_cfg["seed"])
    model = build_model(cfg, prior_dir=_keep_prior_copy(cfg, out, rank == 0, world)).to(device)
    disc = PatchDiscriminator(3, loss_cfg["disc_channels"], loss_cfg["disc_layers"]).to(device)
    perceptual = build_perceptual(loss_cfg["perceptual"])
    perceptual = perceptual.to(device) if perceptual is not None else None
    betas = tuple(optim_cfg["betas"])
    opt_g = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=optim_cfg["lr"], betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=optim_cfg["lr"], betas=betas)
    ema = WeightEMA(model, float(optim_cfg["ema_decay"])) if optim_cfg["ema_decay"] else None

    precision = resolve_precision(run_cfg["precision"], device)
    memory_format = torch.channels_last if run_cfg["channels_last"] else torch.contiguous_format
    for net in (model, disc, perceptual):
        if net is not None:
            net.to(memory_format=memory_format)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return _Run(cfg, out, rank, world, device, model, disc, perceptual, opt_g, opt_d, scaler, ema, precision,
                memory_format)


def _build_data(cfg: dict[str, Any], r: _Run) -> tuple[ImageDataset, ResumableSampler, int, int]:
    """(dataset, sampler, batch per rank, steps per epoch); the ragged last batch is dropped."""
    data = cfg["data"]
    dataset = ImageDataset(data["train"], cfg["model"]["resolution"], data["crop"], data["flip"], tuple(data["scale"]),
                           hue_jitter=float(data["hue_jitter"]), saturation=tuple(data["saturation"]),
                           synthetic=float(data["synthetic"]), synthetic_plain=float(data["synthetic_plain"]))
    sampler = ResumableSampler(len(dataset), cfg["run"]["seed"], r.rank, r.world)
    local_batch = cfg["optim"]["batch_size"] // r.world
    steps_per_epoch = sampler.per_rank // local_batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} images is fewer than one batch of {cfg['optim']['batch_size']}")
    balance = float(cfg["loss"]["colour_balance"])
    if balance:
        # measured on the data, not fixed: a face or bird set has other colour axes than open photos
        axes, stds = colour_axes(sample_pixels(dataset, seed=cfg["run"]["seed"]))
        r.colour_l1 = ColourBalancedL1(axes, stds, balance, cfg["loss"]["colour_balance_norm"]).to(r.device)
        if r.is_main:
            rows = ", ".join(f"({a[0]:+.2f}, {a[1]:+.2f}, {a[2]:+.2f}) std {sd:.3f}" for a, sd in zip(axes.tolist(), stds))
            print(f"colour-balanced L1 (exponent {balance}, norm {cfg['loss']['colour_balance_norm']}): axes {rows}", flush=True)
    return dataset, sampler, local_batch, steps_per_epoch


def _epoch_loader(dataset: ImageDataset, sampler: ResumableSampler, local_batch: int, epoch: int, start: int,
                  r: _Run) -> DataLoader:
    """The batches of ``epoch`` from its ``start``-th step on."""
    sampler.set_position(epoch, start * local_batch)
    return DataLoader(dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
                      num_workers=int(r.cfg["data"]["workers"]), persistent_workers=False,
                      pin_memory=r.device.type == "cuda",
                      # its own generator: creating a loader must not consume the global RNG,
                      # or a run resumed mid-epoch would draw different dropout masks
                      generator=torch.Generator().manual_seed(r.cfg["run"]["seed"] + epoch))


def _resume(r: _Run) -> int:
    """Load the latest checkpoint of ``r.out`` (models, optimizers, scaler, EMA, RNG); returns its step."""
    latest = find_latest(r.out)
    if latest is None:
        if r.is_main:
            print(f"no checkpoint in {r.out}; starting from scratch")
        return 0
    state = load_checkpoint(latest, map_location=r.device)
    r.model.load_state_dict(state["model"])
    r.disc.load_state_dict(state["discriminator"])
    r.opt_g.load_state_dict(state["opt_g"])
    r.opt_d.load_state_dict(state["opt_d"])
    r.scaler.load_state_dict(state["scaler"])
    if r.ema is not None and "model_ema" in state:
        r.ema.load_state_dict(state["model_ema"])
    step = int(state["step"])
    # RNG states are CPU ByteTensors whatever map_location moved them to
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if r.device.type == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    if r.is_main:
        print(f"resumed {latest} at step {step}")
        _truncate_metrics(r.out / "metrics.jsonl", step)
    return step


def _print_header(r: _Run, num_images: int, step: int) -> None:
    cfg, cb = r.cfg, r.cfg["codebook"]
    n_params = sum(p.numel() for p in r.model.parameters() if p.requires_grad)
    print(f"vqct train: {r.out} | device {r.device} x{r.world} | torch threads {torch.get_num_threads()} | "
          f"precision {r.precision} | channels_last {bool(cfg['run']['channels_last'])} | "
          f"batch {cfg['optim']['batch_size']} | {num_images} images, crop {cfg['data']['crop']} "
          f"{cfg['model']['resolution']}px | {n_params / 1e6:.2f} M trainable | codebook {cb['quantizer']}/{cb['source']}"
          f"/{cb['transfer']}{_learned_options(cb)} | "
          f"step {step} of {int(cfg['optim']['steps'])}", flush=True)


# ---------------------------------------------------------------------------------- one step
def _large_plain(cfg: dict[str, Any], step: int, r: _Run) -> torch.Tensor | None:
    """The step's extra batch of large plain patterns in [-1, 1], or None (data.large_plain_every)."""
    data = cfg["data"]
    every = int(data["large_plain_every"])
    if not every or step % every != every - 1:
        return None
    # a seed per (run seed, step, rank): the same batch after a resume, other batches on other ranks
    seed = (int(cfg["run"]["seed"]) * 1_000_003 + step) * 64 + r.rank
    x = plain_batch(seed, int(data["large_plain_size"]), int(data["large_plain_batch"])).mul_(2.0).sub_(1.0)
    return x.to(r.device).contiguous(memory_format=r.memory_format)


def _balance_layer(ae: torch.nn.Module) -> torch.Tensor:
    """Where the adaptive GAN weight compares gradients: the decoder's last layer (VQGAN's choice), or
    quant_conv's weight, the last layer that learns, when the decoder is frozen (optim.trainable=encoder)."""
    last = ae.decoder.last_layer
    return last if last.requires_grad else ae.quant_conv.weight


def _generator_step(r: _Run, x: torch.Tensor, gan_on: bool, large: torch.Tensor | None = None) -> _StepResult:
    """Autoencoder + codebook source: L1 (or L2) + perceptual + codebook/commitment (+ adaptive GAN),
    plus the same reconstruction terms on ``large`` (an extra batch of large plain patterns) when given."""
    loss_cfg, optim_cfg = r.cfg["loss"], r.cfg["optim"]
    with r.autocast():
        fwd = r.ddp_model(x)
        rec = fwd.reconstruction
        criterion = r.colour_l1 if r.colour_l1 is not None else (
            lambda a, b: reconstruction_loss(a, b, loss_cfg["recon"]))
        rec_loss = criterion(x.float(), rec.float())
        p_loss = r.perceptual(x, rec) if r.perceptual is not None else rec_loss.new_zeros(())
        nll = rec_loss + loss_cfg["perceptual_weight"] * p_loss
        if loss_cfg["lowpass_weight"]:
            nll = nll + loss_cfg["lowpass_weight"] * lowpass_loss(x.float(), rec.float(), loss_cfg["lowpass_cell"], criterion)
        if gan_on:
            # the discriminator judges but is not trained here: detached parameters
            d_params = {k: v.detach() for k, v in r.disc.named_parameters()}
            g_loss = -torch.func.functional_call(r.disc, d_params, (rec,)).float().mean()
            d_weight = adaptive_weight(nll, g_loss, _balance_layer(r.model.autoencoder)) * loss_cfg["disc_weight"]
        else:
            g_loss = d_weight = rec_loss.new_zeros(())
        loss = nll + d_weight * g_loss + loss_cfg["codebook_weight"] * fwd.q_loss
        if loss_cfg["spread_weight"] and not r.model.decoder_only:  # a frozen encoder's spread is a constant
            groups = len(r.model.autoencoder.quantizer.groups)
            loss = loss + loss_cfg["spread_weight"] * spread_loss(fwd.live_latent, groups, loss_cfg["spread_floor"])
        if large is not None:
            # No spread term and no GAN: a plain pattern's latents are few by nature, and the
            # discriminator judges photos. The unwrapped model, because a second DDP forward before the
            # backward would confuse its reducer; the parameters are shared, so the one backward sums
            # both passes before the all-reduce.
            big = r.model(large)
            rec_big = big.reconstruction
            big_nll = criterion(large.float(), rec_big.float())
            if r.perceptual is not None:
                big_nll = big_nll + loss_cfg["perceptual_weight"] * r.perceptual(large, rec_big)
            if loss_cfg["lowpass_weight"]:
                big_nll = big_nll + loss_cfg["lowpass_weight"] * lowpass_loss(large.float(), rec_big.float(),
                                                                            loss_cfg["lowpass_cell"], criterion)
            loss = loss + big_nll + loss_cfg["codebook_weight"] * big.q_loss
    r.opt_g.zero_grad(set_to_none=True)
    r.scaler.scale(loss).backward()
    if optim_cfg["grad_clip"]:
        r.scaler.unscale_(r.opt_g)
        torch.nn.utils.clip_grad_norm_(r.model.parameters(), optim_cfg["grad_clip"])
    r.scaler.step(r.opt_g)
    return _StepResult(fwd, loss, rec_loss, p_loss, g_loss, d_weight, rec_loss.new_zeros(()))


def _codebook_upkeep(r: _Run, fwd: Any) -> None:
    """Updates outside the gradient: EMA codes and dead-code restarts of learned codebooks
    (learned_codebook.py; only those with the options have the hook), then the weight EMA."""
    if hasattr(r.model.codebook_source, "after_step"):
        r.model.codebook_source.after_step(fwd.latent, fwd.ids)
    if r.ema is not None:
        r.ema.update(r.model)


def _discriminator_step(r: _Run, x: torch.Tensor, rec: torch.Tensor, disc_on: bool) -> torch.Tensor:
    """One hinge-loss step of the PatchGAN from loss.disc_start on; returns its loss (0 before)."""
    if not disc_on:
        return x.new_zeros((), dtype=torch.float32)
    with r.autocast():
        logits_real = r.ddp_disc(x)
        logits_fake = r.ddp_disc(rec.detach())
        d_loss = hinge_d_loss(logits_real.float(), logits_fake.float())
    r.opt_d.zero_grad(set_to_none=True)
    r.scaler.scale(d_loss).backward()
    r.scaler.step(r.opt_d)
    return d_loss


# ---------------------------------------------------------------------------------- bookkeeping
def _loss_stats(result: _StepResult) -> dict[str, float]:
    fwd = result.fwd
    return {"loss": result.loss.item(), "rec": result.rec_loss.item(), "perceptual": float(result.p_loss.detach()),
            "codebook": fwd.codebook_loss.item(), "commitment": fwd.commitment_loss.item(),
            "g": float(result.g_loss.detach()), "d": float(result.d_loss.detach()),
            "d_weight": float(result.d_weight.detach())}


def _window_geometry(r: _Run) -> LatentGeometry:
    """A fresh sample of the log window's latents (at most 4,096 cells)."""
    return LatentGeometry(r.model.config, max_cells=4096, per_batch=256)


def _save(r: _Run, step: int, epoch: int) -> None:
    """Everything needed to continue bit for bit; rank 0 writes, every rank waits."""
    if r.is_main:
        save_checkpoint(r.out, step, {
            "model": r.model.state_dict(), "discriminator": r.disc.state_dict(),
            "opt_g": r.opt_g.state_dict(), "opt_d": r.opt_d.state_dict(), "scaler": r.scaler.state_dict(),
            "step": step, "epoch": epoch, "config": r.cfg, "rng": _rng_state(r.device),
            **({"model_ema": r.ema.state_dict()} if r.ema is not None else {}),
        }, keep=r.cfg["run"]["keep"])
    if r.world > 1:
        dist.barrier()


def _time_is_up(deadline: float, device: torch.device, world: int) -> bool:
    """Whether rank 0's clock has passed ``deadline``; every rank gets rank 0's answer."""
    up = torch.tensor([float(time.perf_counter() >= deadline)], device=device)
    if world > 1:
        dist.broadcast(up, src=0)
    return bool(up.item())


def _geometry_stats(geometry: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Per group: the centred participation ratio of the window's pre-quantization latents and the
    share of their first component (evaluation/geometry.py)."""
    return {f"{key}_{name}": g[key] for name, g in geometry.items() for key in ("latent_pr", "latent_top_share")}


def _warn_if_collapsed(stats: dict[str, Any], is_main: bool, after_step: int = 200) -> None:
    """Warn (once per log line) when a group's latent PR falls below COLLAPSE_WARN_PR: the latents
    then carry about one number per cell, whatever the ids hold (issue 20)."""
    geometry = {k[len("latent_pr_"):]: {"latent_pr": v} for k, v in stats.items() if k.startswith("latent_pr_")}
    low = collapsed_groups(geometry)
    if is_main and low and stats["step"] >= after_step:
        detail = ", ".join(f"{g} {geometry[g]['latent_pr']:.2f}" for g in low)
        print(f"\nwarning: step {stats['step']}: the encoder's latents are collapsing (participation ratio {detail} "
              f"< {COLLAPSE_WARN_PR}): tokens will carry little more than brightness. See README 'Latent collapse'.",
              flush=True)


def _learned_options(cb: dict[str, Any]) -> str:
    """The learned-codebook options that are on, for the header line ("" when none is)."""
    on = [f"{k}={cb[k]}" for k, off in LEARNED_OPTION_DEFAULTS.items() if cb.get(k, off) != off]
    return f" ({', '.join(on)})" if on else ""


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 autocast where the hardware has bf16 matrix units (CUDA with bf16; CPUs with
    AMX-BF16 or AVX512-BF16, where oneDNN runs bf16 convolutions faster than fp32), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def _keep_prior_copy(cfg: dict[str, Any], out: Path, is_main: bool, world: int) -> Path | None:
    """Copy the prior into the run folder once, so resume and export never depend on a prior that
    may have been rebuilt since (ids, graph and vocab would silently change)."""
    if cfg["codebook"]["quantizer"] == "vq" or cfg["codebook"]["source"] == "learned":
        return None
    kept = out / "prior"
    if is_main and not kept.is_dir():
        tmp = out / ".prior.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(resolve_prior_dir(cfg), tmp)
        os.replace(tmp, kept)
    if world > 1:
        dist.barrier()
    return kept


def _rng_state(device: torch.device) -> dict[str, Any]:
    py = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "python": [py[0], list(py[1]), py[2]]}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from, so the log is one run."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if (rec := _json_line(ln)) is not None and rec.get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def _json_line(line: str) -> dict[str, Any] | None:
    """A metrics line as a dict; None for a blank or torn line (a kill -9 mid-write leaves one)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


class _Logger:
    """JSONL metrics on rank 0, TensorBoard too when it is installed."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.file = open(out / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def write(self, stats: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in stats.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in stats.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, stats["step"])

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
