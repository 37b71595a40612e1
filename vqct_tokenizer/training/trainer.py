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
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from ..evaluation.geometry import COLLAPSE_WARN_PR, LatentGeometry, collapsed_groups
from ..evaluation.plots import save_recon_grid
from ..evaluation.usage import UsageWindow
from ..runtime import progress_bar, resolve_device
from .checkpoint import find_latest, load_checkpoint, save_checkpoint
from .data import ImageDataset, ResumableSampler
from .discriminator import PatchDiscriminator
from .learned_codebook import LEARNED_OPTION_DEFAULTS
from .losses import adaptive_weight, hinge_d_loss, reconstruction_loss
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


def train(cfg: dict[str, Any], resume: bool = False, max_steps: int | None = None,
          max_minutes: float | None = None) -> Path:
    """Run (or continue) the training described by ``cfg``; returns the output folder.

    ``max_steps`` stops this invocation early (the run's schedule still says optim.steps); tests and
    time-boxed sessions use it. ``max_minutes`` stops it after that much wall time (counted from the
    first step, on rank 0's clock), with a checkpoint at the step where it stops; ``--resume`` continues.
    """
    run, optim_cfg, loss_cfg = cfg["run"], cfg["optim"], cfg["loss"]
    rank, world, _, device = setup_distributed()
    is_main = rank == 0
    out = Path(run["out_dir"])
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    if run["threads"]:
        torch.set_num_threads(int(run["threads"]))
    if optim_cfg["batch_size"] % world:
        raise ValueError(f"optim.batch_size {optim_cfg['batch_size']} does not split evenly over {world} ranks")
    local_batch = optim_cfg["batch_size"] // world

    # ------------------------------------------------------------------ seed, models, optimizers
    torch.manual_seed(run["seed"])
    random.seed(run["seed"])
    model = build_model(cfg, prior_dir=_keep_prior_copy(cfg, out, is_main, world)).to(device)
    disc = PatchDiscriminator(3, loss_cfg["disc_channels"], loss_cfg["disc_layers"]).to(device)
    perceptual = build_perceptual(loss_cfg["perceptual"])
    perceptual = perceptual.to(device) if perceptual is not None else None
    opt_g = torch.optim.Adam(model.parameters(), lr=optim_cfg["lr"], betas=tuple(optim_cfg["betas"]))
    opt_d = torch.optim.Adam(disc.parameters(), lr=optim_cfg["lr"], betas=tuple(optim_cfg["betas"]))

    ema = WeightEMA(model, float(optim_cfg["ema_decay"])) if optim_cfg["ema_decay"] else None
    precision = resolve_precision(run["precision"], device)
    memory_format = torch.channels_last if run["channels_last"] else torch.contiguous_format
    for net in (model, disc, perceptual):
        if net is not None:
            net.to(memory_format=memory_format)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    # ------------------------------------------------------------------ data
    dataset = ImageDataset(cfg["data"]["train"], cfg["model"]["resolution"], cfg["data"]["crop"], cfg["data"]["flip"],
                           tuple(cfg["data"]["scale"]))
    sampler = ResumableSampler(len(dataset), run["seed"], rank, world)
    steps_per_epoch = sampler.per_rank // local_batch  # drop the ragged last batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} images is fewer than one batch of {optim_cfg['batch_size']}")

    # ------------------------------------------------------------------ resume
    step = 0
    if resume:
        latest = find_latest(out)
        if latest is not None:
            state = load_checkpoint(latest, map_location=device)
            model.load_state_dict(state["model"])
            disc.load_state_dict(state["discriminator"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            scaler.load_state_dict(state["scaler"])
            if ema is not None and "model_ema" in state:
                ema.load_state_dict(state["model_ema"])
            step = int(state["step"])
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"])
            version, internal, gauss = state["rng"]["python"]
            random.setstate((version, tuple(internal), gauss))
            if is_main:
                print(f"resumed {latest} at step {step}")
                _truncate_metrics(out / "metrics.jsonl", step)
        elif is_main:
            print(f"no checkpoint in {out}; starting from scratch")

    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    ddp_disc = DDP(disc, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else disc
    last_layer = model.autoencoder.decoder.last_layer

    if is_main:
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        n_params = sum(p.numel() for p in model.parameters())
        print(f"vqct train: {out} | device {device} x{world} | torch threads {torch.get_num_threads()} | "
              f"precision {precision} | channels_last {bool(run['channels_last'])} | batch {optim_cfg['batch_size']} | "
              f"{len(dataset)} images, crop {cfg['data']['crop']} {cfg['model']['resolution']}px | "
              f"{n_params / 1e6:.2f} M trainable | codebook {cfg['codebook']['quantizer']}/{cfg['codebook']['source']}"
              f"/{cfg['codebook']['transfer']}{_learned_options(cfg['codebook'])} | "
              f"step {step} of {int(optim_cfg['steps'])}", flush=True)
    log = _Logger(out, is_main)
    usage = UsageWindow(model.config, run["usage_window"])
    geometry = LatentGeometry(model.config, max_cells=4096, per_batch=256)  # the log window's latents
    total_steps = int(optim_cfg["steps"]) if max_steps is None else min(int(optim_cfg["steps"]), step + int(max_steps))

    bar = progress_bar(total_steps, "train", enabled=is_main, initial=step)
    deadline = None if max_minutes is None else time.perf_counter() + 60.0 * float(max_minutes)
    t_last, imgs_since = time.perf_counter(), 0
    model.train()
    disc.train()
    while step < total_steps:
        epoch, start = divmod(step, steps_per_epoch)
        sampler.set_position(epoch, start * local_batch)
        loader = DataLoader(dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
                            num_workers=int(cfg["data"]["workers"]), persistent_workers=False,
                            pin_memory=device.type == "cuda",
                            # its own generator: creating a loader must not consume the global RNG,
                            # or a run resumed mid-epoch would draw different dropout masks
                            generator=torch.Generator().manual_seed(run["seed"] + epoch))
        for x in loader:
            if step >= total_steps or step // steps_per_epoch != epoch:
                break
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            gan_on = step >= loss_cfg["disc_start"] and loss_cfg["disc_weight"] > 0
            lr = learning_rate(step, optim_cfg)
            set_learning_rate(opt_g, lr)
            set_learning_rate(opt_d, lr)

            # ---------------- generator step: autoencoder + codebook transfer
            with autocast():
                fwd = ddp_model(x)
                rec = fwd.reconstruction
                rec_loss = reconstruction_loss(x.float(), rec.float(), loss_cfg["recon"])
                p_loss = perceptual(x, rec) if perceptual is not None else rec_loss.new_zeros(())
                nll = rec_loss + loss_cfg["perceptual_weight"] * p_loss
                if gan_on:
                    # the discriminator judges but is not trained here: detached parameters
                    d_params = {k: v.detach() for k, v in disc.named_parameters()}
                    g_loss = -torch.func.functional_call(disc, d_params, (rec,)).float().mean()
                    d_weight = adaptive_weight(nll, g_loss, last_layer) * loss_cfg["disc_weight"]
                else:
                    g_loss = d_weight = rec_loss.new_zeros(())
                loss = nll + d_weight * g_loss + loss_cfg["codebook_weight"] * fwd.q_loss
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if optim_cfg["grad_clip"]:
                scaler.unscale_(opt_g)
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim_cfg["grad_clip"])
            scaler.step(opt_g)

            # ---------------- codebook upkeep outside the gradient (learned_codebook.py): EMA codes,
            # dead-code restarts. Only learned codebooks with those options have the hook.
            if hasattr(model.codebook_source, "after_step"):
                model.codebook_source.after_step(fwd.latent, fwd.ids)
            if ema is not None:
                ema.update(model)

            # ---------------- discriminator step
            d_loss = rec_loss.new_zeros(())
            if gan_on:
                with autocast():
                    logits_real = ddp_disc(x)
                    logits_fake = ddp_disc(rec.detach())
                    d_loss = hinge_d_loss(logits_real.float(), logits_fake.float())
                opt_d.zero_grad(set_to_none=True)
                scaler.scale(d_loss).backward()
                scaler.step(opt_d)
            scaler.update()

            step += 1
            if deadline is not None and _time_is_up(deadline, device, world):
                total_steps = step  # the log, image and checkpoint below see the last step
            imgs_since += x.shape[0] * world
            usage.update(fwd.ids)
            geometry.update(fwd.latent)
            bar.update(1)

            # ---------------- logging, images, checkpoints (rank 0 writes)
            if step % run["log_every"] == 0 or step == total_steps:
                now = time.perf_counter()
                stats = {"step": step, "epoch": epoch, "loss": loss.item(), "rec": rec_loss.item(),
                         "perceptual": float(p_loss.detach()), "codebook": fwd.codebook_loss.item(),
                         "commitment": fwd.commitment_loss.item(), "g": float(g_loss.detach()), "d": float(d_loss.detach()),
                         "d_weight": float(d_weight.detach()), "lr": lr, "img_per_s": imgs_since / (now - t_last), **usage.summary(),
                         **_geometry_stats(geometry.compute())}
                t_last, imgs_since = now, 0
                geometry = LatentGeometry(model.config, max_cells=4096, per_batch=256)
                log.write(stats)
                _warn_if_collapsed(stats, is_main)
                bar.set_postfix(rec=f"{stats['rec']:.4f}", use_n=f"{stats.get('usage_noun', stats.get('usage_code', 0)):.2f}")
            if is_main and run["image_every"] and (step % run["image_every"] == 0 or step == total_steps):
                real, fake = (t[:8].detach().float().cpu().add(1).div(2) for t in (x, rec))  # [-1, 1] -> [0, 1]
                save_recon_grid(real, fake, out / "images" / f"step_{step:08d}.png")
            if run["ckpt_every"] and (step % run["ckpt_every"] == 0 or step == total_steps):
                if is_main:
                    save_checkpoint(out, step, {
                        "model": model.state_dict(), "discriminator": disc.state_dict(),
                        "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "scaler": scaler.state_dict(),
                        "step": step, "epoch": epoch, "config": cfg,
                        "rng": _rng_state(device),
                        **({"model_ema": ema.state_dict()} if ema is not None else {}),
                    }, keep=run["keep"])
                if world > 1:
                    dist.barrier()
    bar.close()
    log.close()
    return out


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


def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


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
