"""What a generator run is started with besides its data (light: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..training.schedule import SCHEDULES

PRECISIONS = ("fp32", "bf16", "auto")
#: the folder of a run that holds its latest generator (what `vqct sample` reads)
GENERATOR_DIR = "generator"


@dataclass
class GeneratorTraining:
    """Everything a run is started with besides its data. Defaults: a ~5 M-parameter model."""

    # model
    width: int = 256
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    # optimisation (AdamW; weight decay on matrices only)
    steps: int = 5000
    batch_size: int = 64
    lr: float = 3e-4
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    # captions: the share trained without theirs (classifier-free guidance); the encoder (None: the prior's)
    caption_dropout: float = 0.1
    text_encoder: str | None = None
    # run
    seed: int = 0
    precision: str = "fp32"
    log_every: int = 50
    ckpt_every: int = 500
    keep: int = 2
    threads: int = 0

    def validate(self) -> None:
        checks = [
            (self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be >= 1"),
            (self.lr > 0 and self.warmup_steps >= 0 and 0 <= self.min_lr_ratio <= 1, "lr > 0, warmup_steps >= 0 and "
             "min_lr_ratio in [0, 1] are required"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.weight_decay >= 0 and self.grad_clip >= 0, "weight_decay and grad_clip must be >= 0"),
            (0 <= self.caption_dropout <= 1, "caption_dropout must be in [0, 1]"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.log_every >= 1 and self.ckpt_every >= 0 and self.keep >= 0 and self.threads >= 0,
             "log_every must be >= 1; ckpt_every, keep and threads >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"generator training: {message}")

    def optim(self) -> dict[str, Any]:
        """The keys training/schedule.learning_rate reads."""
        return {"lr": self.lr, "warmup_steps": self.warmup_steps, "steps": self.steps, "schedule": self.schedule,
                "min_lr_ratio": self.min_lr_ratio}


#: settings a resumed run may change: they do not alter the steps already taken (steps changes the
#: schedule from here on, which the user asks for by extending a run)
RESUME_MAY_CHANGE = ("steps", "log_every", "ckpt_every", "keep", "threads")


__all__ = ["GENERATOR_DIR", "GeneratorTraining", "PRECISIONS", "RESUME_MAY_CHANGE"]
