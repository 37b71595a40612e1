"""A small GPT-style generator over token grids, and its config.

The sequence of one image is its grid in raster order, each cell's k+1 ids consecutive: for the
VQCT layout (k adjective ids, then one noun id) cell (r, c) occupies positions
(r·W + c)·(k+1) ... (r·W + c)·(k+1) + k. Position j holds the previous id (position 0: the start
vector, which is the caption's projection when there is one) plus the embedding of the place j
itself (cell + slot), so the network always knows which group it is predicting. Every group of the
layout has its own embedding table and its own output head over its own id range, so a sample can
never hold an id outside its slot's range.

    config = GeneratorConfig.from_layout(token_dataset.layout, width=256, depth=6, heads=8)
    model = TokenGenerator(config)
    nll = model(tokens)                       # (B, N) nats per token; tokens (B, h, w, k+1)
    grids = model.sample(16, temperature=1.0) # (16, h, w, k+1) LongTensor
    model.save_pretrained("gen/")             # generator.json + generator.safetensors
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..errors import TokenError

CONFIG_NAME = "generator.json"
WEIGHTS_NAME = "generator.safetensors"
FORMAT_NAME = "vqct-generator"


@dataclass(frozen=True)
class SlotGroup:
    """One group of a cell's slots (the layout's ``groups`` entry): ``k`` slots drawing ids in [start, end)."""

    name: str
    k: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class GeneratorConfig:
    grid: tuple[int, int]           # (rows, columns) of every token grid
    groups: tuple[SlotGroup, ...]   # in slot order, as VQCTConfig.token_layout() lists them
    width: int = 256
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # caption conditioning: the dimension of the frozen sentence embedding (None: unconditional),
    # the text encoder that makes it (a load_text_encoder spec) and whether it is l2-normalised
    text_dim: int | None = None
    text_encoder: str | None = None
    text_normalize: bool = False
    # the share of captions dropped in training: above 0, the model also knows "no caption", which
    # sampling without a caption and classifier-free guidance need
    caption_dropout: float = 0.0
    # the tokenizer whose tokens it models: model, config_hash, weights_hash, layout (checked at sampling)
    tokenizer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.grid = tuple(int(g) for g in self.grid)
        self.groups = tuple(g if isinstance(g, SlotGroup) else SlotGroup(**g) for g in self.groups)
        self.validate()

    @classmethod
    def from_layout(cls, layout: dict[str, Any], **kwargs: Any) -> "GeneratorConfig":
        """The config for grids of ``layout`` (a token dataset's ``layout``); a native-size layout
        (grid null: sizes vary) has no fixed sequence to model."""
        if layout.get("grid") is None:
            raise TokenError("the token dataset holds native-size grids of varying shapes; a generator needs one "
                             "grid size: encode the images at one resolution (vqct encode-dataset without --native)")
        groups = tuple(SlotGroup(g["name"], int(g["k"]), int(g["id_range"][0]), int(g["id_range"][1]))
                       for g in layout["groups"])
        return cls(grid=tuple(layout["grid"]), groups=groups, **kwargs)

    @property
    def tokens_per_cell(self) -> int:
        return sum(g.k for g in self.groups)

    @property
    def seq_len(self) -> int:
        return self.grid[0] * self.grid[1] * self.tokens_per_cell

    @property
    def conditional(self) -> bool:
        return self.text_dim is not None

    def slot_columns(self) -> list[list[int]]:
        """Per group, the slot indices (columns of a cell) it fills."""
        cols, start = [], 0
        for g in self.groups:
            cols.append(list(range(start, start + g.k)))
            start += g.k
        return cols

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"invalid generator config: {msg}")

        need(len(self.grid) == 2 and all(1 <= g <= 4096 for g in self.grid), f"grid must be two sizes in [1, 4096], got {self.grid}")
        need(len(self.groups) >= 1, "groups must not be empty")
        for g in self.groups:
            need(g.k >= 1 and 0 <= g.start < g.end, f"group {g.name!r} must have k >= 1 and 0 <= start < end, got {g}")
        need(1 <= self.depth <= 128 and 1 <= self.heads <= 128, f"depth and heads must be in [1, 128], got {self.depth}, {self.heads}")
        need(1 <= self.width <= 16384 and self.width % self.heads == 0,
             f"width must be in [1, 16384] and divisible by heads ({self.heads}), got {self.width}")
        need(0 < self.mlp_ratio <= 16, f"mlp_ratio must be in (0, 16], got {self.mlp_ratio}")
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.text_dim is None or 1 <= self.text_dim <= 65536, f"text_dim must be null or in [1, 65536], got {self.text_dim}")
        need(0 <= self.caption_dropout <= 1, f"caption_dropout must be in [0, 1], got {self.caption_dropout}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["grid"] = list(self.grid)
        return {"format": FORMAT_NAME, **d}

    @classmethod
    def from_dict(cls, data: Any) -> "GeneratorConfig":
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ConfigError(f"not a {FORMAT_NAME} config (its \"format\" field must be {FORMAT_NAME!r})")
        data = {k: v for k, v in data.items() if k != "format"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"generator config has unknown fields {unknown}")
        try:
            return cls(**data)
        except ConfigError:
            raise
        except (TypeError, ValueError, KeyError) as e:
            raise ConfigError(f"generator config has a field of the wrong type: {e}") from e


# ---------------------------------------------------------------------------------------- network
class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then an MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        # x (B, T, C). With ``cache`` ([] or [k, v] of earlier positions) x is one new position and
        # the cache grows by it: sampling never recomputes the prefix.
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, C/H) each
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                             is_causal=cache is None)  # one new query sees all cached keys
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, c)))
        return x + self.mlp(self.ln2(x))


class TokenGenerator(nn.Module):
    """Autoregressive prior over (h, w, k+1) token grids; see the module docstring."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = c = config
        cells, k1 = c.grid[0] * c.grid[1], c.tokens_per_cell
        self.embed = nn.ModuleList(nn.Embedding(g.size, c.width) for g in c.groups)
        self.heads = nn.ModuleList(nn.Linear(c.width, g.size) for g in c.groups)
        self.cell_pos = nn.Parameter(torch.zeros(cells, c.width))   # (h·w, C)
        self.slot_pos = nn.Parameter(torch.zeros(k1, c.width))      # (k+1, C)
        self.start = nn.Parameter(torch.zeros(c.width))             # position 0 without a caption
        self.text_proj = nn.Linear(c.text_dim, c.width) if c.conditional else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth))
        self.ln_f = nn.LayerNorm(c.width)
        # slot -> (group, index of the slot within the group), and the group's first global id
        self._slot_group = [gi for gi, g in enumerate(c.groups) for _ in range(g.k)]
        self._columns = c.slot_columns()
        self.apply(self._init)
        for p in (self.cell_pos, self.slot_pos, self.start):
            nn.init.normal_(p, std=0.02)
        for block in self.blocks:  # GPT-2: residual projections scaled by depth
            for layer in (block.proj, block.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * c.depth))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    @property
    def device(self) -> torch.device:
        return self.start.device

    # ------------------------------------------------------------------ pieces
    def positions(self) -> torch.Tensor:
        """(N, C): the embedding of each place of the sequence, cell + slot."""
        c = self.config
        return (self.cell_pos[:, None, :] + self.slot_pos[None, :, :]).reshape(c.seq_len, c.width)

    def start_vectors(self, batch: int, text: torch.Tensor | None, use_text: torch.Tensor | None) -> torch.Tensor:
        """(B, C): position 0's input: the projected caption where ``use_text`` (B,) is true, else ``start``."""
        start = self.start.expand(batch, -1)
        if text is None:
            return start
        if self.text_proj is None:
            raise ValueError("this generator is unconditional: it takes no caption")
        if text.shape != (batch, self.config.text_dim):
            raise ValueError(f"caption embeddings must have shape ({batch}, {self.config.text_dim}), got {tuple(text.shape)}")
        projected = self.text_proj(text.to(self.start.dtype))
        if use_text is None:
            return projected
        return torch.where(use_text[:, None].to(self.device), projected, start)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w, k+1) global ids -> (B, N, C), each slot through its own group's table."""
        b = tokens.shape[0]
        out = torch.zeros(b, tokens.shape[1] * tokens.shape[2], tokens.shape[3], self.config.width,
                          dtype=self.start.dtype, device=tokens.device)
        flat = tokens.reshape(b, -1, tokens.shape[3])  # (B, h·w, k+1)
        for g, cols, table in zip(self.config.groups, self._columns, self.embed):
            out[:, :, cols] = table(flat[:, :, cols] - g.start)
        return out.reshape(b, -1, self.config.width)

    def check_tokens(self, tokens: torch.Tensor) -> None:
        c = self.config
        if tokens.dim() != 4 or tuple(tokens.shape[1:]) != (*c.grid, c.tokens_per_cell):
            raise TokenError(f"tokens must have shape (B, {c.grid[0]}, {c.grid[1]}, {c.tokens_per_cell}), "
                             f"got {tuple(tokens.shape)}")
        for g, cols in zip(c.groups, self._columns):
            part = tokens[..., cols]
            if part.numel() and (int(part.min()) < g.start or int(part.max()) >= g.end):
                raise TokenError(f"token ids of the {g.name} slots must be in [{g.start}, {g.end})")

    # ------------------------------------------------------------------ training
    def hidden(self, tokens: torch.Tensor, text: torch.Tensor | None = None,
               use_text: torch.Tensor | None = None) -> torch.Tensor:
        """(B, h·w, k+1, C): the final features that predict each id of ``tokens`` (B, h, w, k+1);
        ``heads[g]`` of a group's slots gives its logits."""
        self.check_tokens(tokens)
        c = self.config
        b = tokens.shape[0]
        start = self.start_vectors(b, text, use_text)[:, None, :]                  # (B, 1, C)
        prev = self.embed_tokens(tokens)[:, :-1]                                    # (B, N-1, C)
        x = self.drop(torch.cat([start, prev], 1) + self.positions())              # (B, N, C)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x).reshape(b, -1, c.tokens_per_cell, c.width)

    def forward(self, tokens: torch.Tensor, text: torch.Tensor | None = None,
                use_text: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood in nats of every id of ``tokens`` (B, h, w, k+1): (B, N).

        ``text`` (B, text_dim): caption embeddings; ``use_text`` (B,) bool: which rows keep theirs
        (the others see no caption, as classifier-free guidance trains it).
        """
        c = self.config
        b = tokens.shape[0]
        x = self.hidden(tokens, text, use_text)                                     # (B, h·w, k+1, C)
        target = tokens.reshape(b, -1, c.tokens_per_cell)
        nll = x.new_zeros(b, x.shape[1], c.tokens_per_cell, dtype=torch.float32)
        for g, cols, head in zip(c.groups, self._columns, self.heads):
            logits = head(x[:, :, cols]).float()                                    # (B, h·w, k_g, |g|)
            nll[:, :, cols] = F.cross_entropy(logits.flatten(0, 2), (target[:, :, cols] - g.start).flatten(),
                                              reduction="none").view(b, -1, g.k)
        return nll.reshape(b, -1)

    @torch.no_grad()
    def bits_per_image(self, tokens: torch.Tensor, text: torch.Tensor | None = None,
                       use_text: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) the negative log-likelihood of each grid in bits (eval mode: no dropout)."""
        was = self.training
        self.eval()
        try:
            return self(tokens, text, use_text).sum(1) / math.log(2)
        finally:
            self.train(was)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, n: int, text: torch.Tensor | None = None, *, temperature: float = 1.0, top_k: int = 0,
               guidance: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` token grids (n, h, w, k+1), one id at a time, each drawn from its slot's group only.

        ``text`` (n, text_dim) or (text_dim,): the caption embedding(s); None samples with no caption.
        ``temperature`` 0 is greedy (argmax). ``top_k`` > 0 keeps the k likeliest ids of the group.
        ``guidance`` != 1 (with a caption): classifier-free guidance, logits
        uncond + guidance·(cond − uncond).
        """
        c = self.config
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if temperature < 0 or top_k < 0:
            raise ValueError(f"temperature and top_k must be >= 0, got {temperature}, {top_k}")
        if text is not None and text.dim() == 1:
            text = text.expand(n, -1)
        guided = text is not None and guidance != 1.0
        was = self.training
        self.eval()
        try:
            rows = 2 * n if guided else n
            if text is not None:
                text = text.to(self.device)
                use = torch.arange(rows, device=self.device) < n  # rows n.. are the unconditional half
                x = self.start_vectors(rows, text.repeat(2, 1) if guided else text, use if guided else None)
            else:
                x = self.start_vectors(rows, None, None)
            pos = self.positions()
            caches: list[list[torch.Tensor]] = [[] for _ in self.blocks]
            out = torch.empty(n, c.seq_len, dtype=torch.long, device=self.device)
            for j in range(c.seq_len):
                h = x[:, None, :] + pos[j]                                           # (rows, 1, C)
                for block, cache in zip(self.blocks, caches):
                    h = block(h, cache)
                gi = self._slot_group[j % c.tokens_per_cell]
                logits = self.heads[gi](self.ln_f(h[:, 0])).float()                  # (rows, |g|)
                if guided:
                    cond, uncond = logits[:n], logits[n:]
                    logits = uncond + guidance * (cond - uncond)
                local = _draw(logits, temperature, top_k, generator)                 # (n,)
                out[:, j] = local + c.groups[gi].start
                x = self.embed[gi](local.repeat(2) if guided else local)             # the next position's input
            return out.view(n, *c.grid, c.tokens_per_cell)
        finally:
            self.train(was)

    # ------------------------------------------------------------------ files
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """``generator.json`` (the config) and ``generator.safetensors`` (the weights), each written atomically."""
        from safetensors.torch import save_file

        from ..atomic import atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT_NAME}))
        text = json.dumps(self.config.to_dict(), indent=1) + "\n"
        atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> "TokenGenerator":
        from ..model_files import check_state_dict, read_safetensors

        folder = Path(folder)
        path = folder / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}: not a generator folder (vqct train-generator "
                                    "writes one into its run folder's generator/)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e})") from e
        try:
            config = GeneratorConfig.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
        model = cls(config)
        state = read_safetensors(folder / WEIGHTS_NAME)
        check_state_dict(state, model.state_dict(), str(folder / WEIGHTS_NAME))
        model.load_state_dict(state)
        return model.to(device).eval()


def _draw(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None) -> torch.Tensor:
    """One id per row of ``logits`` (rows, V): argmax at temperature 0, else a draw from the
    tempered, top-k-truncated distribution."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


__all__ = ["GeneratorConfig", "SlotGroup", "TokenGenerator", "CONFIG_NAME", "WEIGHTS_NAME"]
