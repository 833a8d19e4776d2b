"""Training on the CPU and the offline metrics (AUC, logloss, per-request NDCG).

Deterministic for a seed on a given thread count: the data, the initialisation and the shuffling all
derive from it. `bad_labels=True` trains on a permutation of the training labels: a model that exports and
passes parity like any other but learned nothing — the deliberately bad candidate for a rollback drill.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from model_build import data
from model_build.config import TrainConfig
from model_build.fallback import popularity_order
from model_build.ranker import Ranker


@dataclass
class TrainResult:
    ranker: Ranker
    metrics: dict[str, float]
    validation: data.Split
    popularity: list[int]  # item ids by clicks in the training data the model saw (model_build.fallback)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney U) statistic, ties given their average rank."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    if (counts > 1).any():  # average the ranks of tied scores
        sums = np.bincount(inv, weights=ranks)
        ranks = (sums / counts)[inv]
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, dtype=np.float64).ravel()
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def ndcg_at_k(labels: np.ndarray, scores: np.ndarray, request: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over requests with at least one click (rows of a request are contiguous)."""
    out = []
    bounds = np.flatnonzero(np.diff(request)) + 1
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for y, s in zip(np.split(labels, bounds), np.split(scores, bounds), strict=True):
        if y.sum() == 0:
            continue
        top = y[np.argsort(-s, kind="stable")[:k]]
        ideal = np.sort(y)[::-1][:k]
        out.append((top * disc[: len(top)]).sum() / (ideal * disc[: len(ideal)]).sum())
    return float(np.mean(out)) if out else float("nan")


def predict(ranker: Ranker, split: data.Split, batch: int = 8192) -> np.ndarray:
    ranker.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(split), batch):
            b = split.batch(i, i + batch)
            outs.append(
                torch.sigmoid(ranker(torch.from_numpy(b["sparse_ids"]), torch.from_numpy(b["dense"]))).numpy().ravel()
            )
    return np.concatenate(outs)


def train(cfg: TrainConfig, progress: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Train a ranker; `progress(step, total_steps, loss)` is called as it goes."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, progress)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig, progress: Callable[[int, int, float], None] | None) -> TrainResult:
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    tr = data.make_split(cfg.seed, "train", cfg.train_requests)
    va = data.make_split(cfg.seed, "validation", cfg.validation_requests)
    labels = tr.labels
    if cfg.bad_labels:
        labels = np.random.default_rng(cfg.seed + 1).permutation(labels)
    mean = torch.from_numpy(tr.dense.mean(0))
    std = torch.from_numpy(tr.dense.std(0))
    ranker = Ranker(cfg.model, data.FEATURES["cardinalities"], mean, std)
    opt = torch.optim.Adam(ranker.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    sp, de, y = torch.from_numpy(tr.sparse_ids), torch.from_numpy(tr.dense), torch.from_numpy(labels)
    g = torch.Generator().manual_seed(cfg.seed)
    n = len(tr)
    steps_per_epoch = -(-n // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    step = 0
    for _ in range(cfg.epochs):
        ranker.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            loss = loss_fn(ranker(sp[idx], de[idx]).squeeze(1), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress and (step % 10 == 0 or step == total):
                progress(step, total, float(loss.detach()))
    train_s = time.perf_counter() - t0
    p = predict(ranker, va)
    oracle = 1 / (1 + np.exp(-va.logit.astype(np.float64)))
    metrics = {
        "validation_auc": auc(va.labels, p),
        "validation_logloss": logloss(va.labels, p),
        "validation_ndcg_at_10": ndcg_at_k(va.labels, p, va.request),
        "oracle_auc": auc(va.labels, oracle),
        "validation_ctr": float(va.labels.mean()),
        "train_rows": float(n),
        "validation_rows": float(len(va)),
        "train_seconds": train_s,
    }
    ranker.eval()
    item = [name for name, _ in data.SPARSE].index("item_id")
    return TrainResult(ranker, metrics, va, popularity_order(tr.sparse_ids[:, item], labels))
