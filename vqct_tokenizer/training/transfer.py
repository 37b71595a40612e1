"""Where the visual codebook comes from during training.

* ``CodebookTransfer``: VQCT's codebook transfer network. Frozen word vectors (buffers) go through a
  2-layer GCN over the adjective-noun graph (or an MLP / a linear map, as ablations) to give the
  (A+N)×D codebook. Recomputed every training step; computed once, in eval mode, at export.
* ``LearnedCodebook``: a plain VQGAN codebook learned from scratch (the baselines).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def normalized_adjacency(edge_index: torch.Tensor, edge_weight: torch.Tensor, num_adjectives: int,
                         num_nouns: int, binary: bool = False) -> torch.Tensor:
    """Sparse D^-1/2 (A + I) D^-1/2 over A+N nodes; adjective i is node i, noun j is node A+j.

    Edges are made undirected; weights are the co-occurrence counts (1 with ``binary``).
    """
    n = num_adjectives + num_nouns
    src = edge_index[:, 0]
    dst = edge_index[:, 1] + num_adjectives
    w = torch.ones_like(edge_weight, dtype=torch.float32) if binary else edge_weight.float()
    loops = torch.arange(n)
    rows = torch.cat([src, dst, loops])
    cols = torch.cat([dst, src, loops])
    vals = torch.cat([w, w, torch.ones(n)])
    adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=True).coalesce()
    deg = torch.sparse.sum(adj, dim=1).to_dense()
    inv_sqrt = deg.clamp_min(1e-12).rsqrt()
    r, c = adj.indices()
    return torch.sparse_coo_tensor(adj.indices(), adj.values() * inv_sqrt[r] * inv_sqrt[c], (n, n), check_invariants=True).coalesce()


class CodebookTransfer(nn.Module):
    """Frozen word vectors (V, E) -> visual codebook (V, D) through ``gcn`` | ``mlp`` | ``linear``."""

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
            # Â·X never changes (X is frozen), so the first propagation is done once here.
            self.register_buffer("propagated", self.propagate(self.word_vectors), persistent=False)
        self.fc1 = nn.Linear(e, dim)
        self.fc2 = nn.Linear(dim, dim) if kind != "linear" else None
        self.dropout = dropout

    def forward(self) -> torch.Tensor:
        if self.kind == "linear":
            return self.fc1(self.word_vectors)
        if self.kind == "mlp":
            h = F.dropout(F.relu(self.fc1(self.word_vectors)), self.dropout, self.training)
            return self.fc2(h)
        h = F.dropout(F.relu(self.fc1(self.propagated)), self.dropout, self.training)  # Â X W1
        return self.propagate(self.fc2(h))  # Â H W2

    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        """Â @ h for the sparse normalised adjacency, (V, C) -> (V, C)."""
        n = self.word_vectors.shape[0]
        adj = torch.sparse_coo_tensor(torch.stack([self.adj_rows, self.adj_cols]), self.adj_vals, (n, n),
                                      is_coalesced=True, check_invariants=False)
        return torch.sparse.mm(adj, h.float())


class LearnedCodebook(nn.Module):
    """A VQGAN codebook learned from scratch, initialised U(-1/K, 1/K) as in taming."""

    def __init__(self, num_codes: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes))

    def forward(self) -> torch.Tensor:
        return self.weight
