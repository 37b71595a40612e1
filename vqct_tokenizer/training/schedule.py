"""Learning-rate schedule and an exponential moving average of the weights.

Both are functions of the step alone (plus the EMA's own tensors, which checkpoints keep), so a
resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

SCHEDULES = ("constant", "cosine")


def learning_rate(step: int, optim_cfg: dict[str, Any]) -> float:
    """The rate for ``step`` (0-based): linear warm-up over ``warmup_steps``, then ``constant`` or a
    ``cosine`` decay to ``min_lr_ratio``·lr at ``steps``."""
    base, warmup, total = float(optim_cfg["lr"]), int(optim_cfg["warmup_steps"]), int(optim_cfg["steps"])
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if optim_cfg["schedule"] == "constant" or total <= warmup:
        return base
    progress = min(1.0, (step - warmup) / (total - warmup))
    floor = float(optim_cfg["min_lr_ratio"])
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class WeightEMA:
    """An exponential moving average of a module's parameters (buffers are copied as they are).

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so early weights
    (a random network) fade out quickly. ``state_dict()`` has the module's own keys: a checkpoint's
    "model_ema" loads into a fresh model with ``load_state_dict``.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.averaged = {name for name, p in module.named_parameters() if p.dtype.is_floating_point}
        self.shadow = {k: v.detach().clone().float() if k in self.averaged else v.detach().clone()
                       for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, value in module.state_dict().items():
            shadow = self.shadow[name]
            if name in self.averaged:
                shadow.lerp_(value.detach().float(), 1.0 - d)
            else:
                shadow.copy_(value.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.updates = int(state["updates"])
