"""The ranker: a DCN-v2 style network over int32 ids and raw dense features.

`Ranker(sparse_ids, dense) -> logit [B, 1]` is what training optimises; `Scorer` wraps it with the sigmoid
and is what gets exported (`score` in [0, 1]). Serving-side robustness lives in the graph, not in clients:
ids outside a feature's vocabulary (negative, or >= its cardinality) go to that feature's own
out-of-vocabulary row, and dense features are standardised with statistics frozen from the training set.

Every feature has its own slice of one concatenated embedding table, addressed as `id + offset`: one
Gather per batch instead of one per feature, and no EmbeddingBag (single-valued features only), which keeps
the ONNX graph to operators TensorRT and ONNX Runtime both implement.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from model_build.config import RankerConfig


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class CrossLayer(nn.Module):
    """DCN-v2 cross: x_{l+1} = x0 * (W x_l + b) + x_l — explicit bounded-degree feature interactions."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.bias)
        nn.init.normal_(self.linear.weight, std=0.01)  # start close to identity: x_{l+1} ~ x_l

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class Ranker(nn.Module):
    # Buffers registered in __init__ (nn.Module's __getattr__ is typed as Tensor | Module).
    cards: torch.Tensor
    offsets: torch.Tensor
    dense_mean: torch.Tensor
    dense_std: torch.Tensor

    def __init__(self, cfg: RankerConfig, cardinalities: list[int], dense_mean: torch.Tensor, dense_std: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        cards = torch.tensor(cardinalities, dtype=torch.int32)
        # Each feature owns card + 1 rows: the extra one is its out-of-vocabulary row.
        sizes = cards + 1
        offsets = torch.cumsum(sizes, 0) - sizes
        self.register_buffer("cards", cards.view(1, -1))
        self.register_buffer("offsets", offsets.to(torch.int32).view(1, -1))
        self.register_buffer("dense_mean", dense_mean.float().view(1, -1))
        self.register_buffer("dense_std", dense_std.float().clamp_min(1e-6).view(1, -1))
        e, n_sparse, n_dense = cfg.embedding_dim, len(cardinalities), dense_mean.numel()
        self.embedding = nn.Embedding(int(sizes.sum()), e)
        nn.init.normal_(self.embedding.weight, std=0.05)
        self.dense_tower = _mlp([n_dense, cfg.dense_hidden, e])
        dim = (n_sparse + 1) * e
        self.cross = nn.ModuleList(CrossLayer(dim) for _ in range(cfg.cross_layers))
        self.deep = _mlp([dim, *cfg.deep])
        top_in = dim + (cfg.deep[-1] if cfg.deep else 0)
        self.top = nn.Sequential(_mlp([top_in, *cfg.top]), nn.Linear(cfg.top[-1] if cfg.top else top_in, 1))

    def forward(self, sparse_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ids = sparse_ids.to(torch.int32)
        in_vocab = (ids >= 0) & (ids < self.cards)
        idx = torch.where(in_vocab, ids, self.cards) + self.offsets
        emb = self.embedding(idx).flatten(1)  # [B, n_sparse * e]
        d = self.dense_tower((dense - self.dense_mean) / self.dense_std)
        x0 = torch.cat([emb, d], 1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.top(torch.cat([x, self.deep(x0)], 1))


class Scorer(nn.Module):
    """The exported model: `score = sigmoid(logit)`, float32 [B, 1]."""

    def __init__(self, ranker: Ranker):
        super().__init__()
        self.ranker = ranker

    def forward(self, sparse_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.ranker(sparse_ids, dense))
