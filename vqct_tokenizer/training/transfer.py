"""Where the visual codebook comes from during training.

* ``CodebookTransfer``: VQCT's codebook transfer network. Frozen word vectors (buffers) go through a
  2-layer GCN over the adjective-noun graph (or an MLP / a linear map, as ablations) to give the
  (A+N)×D codebook. Recomputed every training step; computed once, in eval mode, at export.
* ``LearnedCodebook``: a plain VQGAN codebook learned from scratch (the baselines).

The transfer network always runs in float32 with autocast off: it is tiny (a few sparse products
over ~2k nodes), and bf16 sparse products have no CPU kernel for their backward.

Why the codebook used to collapse onto one direction (benchmarks/prior_geometry.py measures it):
the old second layer computed Â·(H W + b), so its bias was scaled by the row sums of Â, which vary
with node degree; and with the symmetric normalisation D^-1/2 (A+I) D^-1/2 any component shared by
all rows (the ReLU outputs' mean, the prompts' common direction) is scaled by a degree-dependent
factor too. One degree-driven direction then dominated every code. The fix: the GCN layer as Kipf &
Welling define it (Â H W + b, Glorot weights, zero bias) over the row-normalised adjacency
D^-1 (A+I), which maps a shared component to itself. Edge weighting, the normalisation and
word-vector centring are options (``codebook.edge_weight``, ``.adjacency_norm``, ``.center_words``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


EDGE_WEIGHTS = ("count", "log", "binary")
ADJACENCY_NORMS = ("row", "sym")
CENTERINGS = ("none", "all", "pos")


def edge_values(counts: torch.Tensor, kind: str) -> torch.Tensor:
    """Edge weights from co-occurrence counts: raw ``count``, ``log`` (1 + ln count) or ``binary``."""
    counts = counts.float()
    if kind == "count":
        return counts
    if kind == "log":
        return 1.0 + counts.clamp_min(1.0).log()
    if kind == "binary":
        return torch.ones_like(counts)
    raise ValueError(f"edge weight must be one of {EDGE_WEIGHTS}, got {kind!r}")


def normalized_adjacency(edge_index: torch.Tensor, edge_weight: torch.Tensor, num_adjectives: int,
                         num_nouns: int, kind: str = "count", norm: str = "row") -> torch.Tensor:
    """Sparse normalised (A + I) over A+N nodes; adjective i is node i, noun j is node A+j.

    Edges are made undirected; ``kind`` turns co-occurrence counts into weights (see ``edge_values``).
    ``norm="row"`` gives D^-1 (A + I), a weighted mean over each word's neighbourhood; ``"sym"`` gives
    Kipf & Welling's D^-1/2 (A + I) D^-1/2. With "sym" the rows sum to sqrt-degree-dependent values, so
    any component shared by all words (ReLU outputs' mean, the prompt's common direction) comes out
    scaled by node degree: fresh codebooks then lie along one degree-driven direction (participation
    ratio 1.3 of 64 on the shipped prior, against 11.6 with "row"; benchmarks/prior_geometry.py).
    """
    if norm not in ADJACENCY_NORMS:
        raise ValueError(f"adjacency norm must be one of {ADJACENCY_NORMS}, got {norm!r}")
    n = num_adjectives + num_nouns
    src = edge_index[:, 0]
    dst = edge_index[:, 1] + num_adjectives
    w = edge_values(edge_weight, kind)
    loops = torch.arange(n)
    rows = torch.cat([src, dst, loops])
    cols = torch.cat([dst, src, loops])
    vals = torch.cat([w, w, torch.ones(n)])
    adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=True).coalesce()
    deg = torch.sparse.sum(adj, dim=1).to_dense().clamp_min(1e-12)
    r, c = adj.indices()
    scale = 1.0 / deg[r] if norm == "row" else deg[r].rsqrt() * deg[c].rsqrt()
    return torch.sparse_coo_tensor(adj.indices(), adj.values() * scale, (n, n), check_invariants=True).coalesce()


def prepare_word_vectors(words: torch.Tensor, center: str = "none", num_adjectives: int = 0) -> torch.Tensor:
    """Frozen word vectors as the transfer network sees them.

    ``center``: ``none`` (as the prior stores them), ``all`` (subtract the mean word vector) or ``pos``
    (subtract the adjectives' mean from adjectives and the nouns' mean from nouns: the two prompts
    differ, so each part of speech has its own shared component). Centred vectors are rescaled so the
    mean row norm is unchanged.
    """
    if center not in CENTERINGS:
        raise ValueError(f"word-vector centring must be one of {CENTERINGS}, got {center!r}")
    words = words.float()
    if center == "none":
        return words.clone()
    if center == "all":
        centred = words - words.mean(dim=0, keepdim=True)
    else:
        a = num_adjectives
        centred = torch.cat([words[:a] - words[:a].mean(dim=0, keepdim=True),
                             words[a:] - words[a:].mean(dim=0, keepdim=True)])
    return centred * (words.norm(dim=1).mean() / centred.norm(dim=1).mean().clamp_min(1e-12))


class GraphConv(nn.Module):
    """One GCN layer, Â H W + b (Kipf & Welling 2017): Glorot-uniform W, zero bias added after propagation."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(adjacency, h @ self.weight) + self.bias


class CodebookTransfer(nn.Module):
    """Frozen word vectors (V, E) -> visual codebook (V, D) through ``gcn`` | ``mlp`` | ``linear``.

    Dropout (``dropout``) applies to the GCN's hidden layer only, as in the paper. The MLP has none,
    as in the official code: with dropout 0.5 an MLP's eval-mode codebook is far from every codebook
    it trained with, so the exported model would decode codes its decoder never saw.
    """

    def __init__(self, word_vectors: torch.Tensor, dim: int, kind: str = "gcn",
                 adjacency: torch.Tensor | None = None, dropout: float = 0.5) -> None:
        super().__init__()
        if kind not in ("gcn", "mlp", "linear"):
            raise ValueError(f"transfer must be 'gcn', 'mlp' or 'linear', got {kind!r}")
        if kind == "gcn" and adjacency is None:
            raise ValueError("the gcn transfer needs the word graph's adjacency")
        self.kind = kind
        self.register_buffer("word_vectors", word_vectors.float().clone(), persistent=True)
        e = word_vectors.shape[1]
        if kind == "gcn":
            # Kept as dense (row, col, value) triples: plain buffers broadcast fine under DDP.
            adjacency = adjacency.coalesce()
            self.register_buffer("adj_rows", adjacency.indices()[0].clone(), persistent=False)
            self.register_buffer("adj_cols", adjacency.indices()[1].clone(), persistent=False)
            self.register_buffer("adj_vals", adjacency.values().float().clone(), persistent=False)
            self.layer1, self.layer2 = GraphConv(e, dim), GraphConv(dim, dim)
            self.dropout = dropout
        elif kind == "mlp":
            self.fc1, self.fc2 = nn.Linear(e, dim), nn.Linear(dim, dim)
        else:
            self.fc1 = nn.Linear(e, dim)

    def forward(self) -> torch.Tensor:
        with torch.autocast(device_type=self.word_vectors.device.type, enabled=False):
            x = self.word_vectors
            if self.kind == "linear":
                return self.fc1(x)
            if self.kind == "mlp":
                return self.fc2(F.relu(self.fc1(x)))
            adj = self.adjacency()
            h = F.dropout(F.relu(self.layer1(x, adj)), self.dropout, self.training)  # (V, D)
            return self.layer2(h, adj)                                               # (V, D)

    def adjacency(self) -> torch.Tensor:
        n = self.word_vectors.shape[0]
        return torch.sparse_coo_tensor(torch.stack([self.adj_rows, self.adj_cols]), self.adj_vals, (n, n),
                                       is_coalesced=True, check_invariants=False)


class LearnedCodebook(nn.Module):
    """A VQGAN codebook learned from scratch, initialised U(-1/K, 1/K) as in taming."""

    def __init__(self, num_codes: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes))

    def forward(self) -> torch.Tensor:
        return self.weight


__all__ = ["CodebookTransfer", "LearnedCodebook", "GraphConv", "normalized_adjacency", "edge_values",
           "prepare_word_vectors", "EDGE_WEIGHTS",
           "ADJACENCY_NORMS", "CENTERINGS"]
