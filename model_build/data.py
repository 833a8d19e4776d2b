"""Seeded synthetic e-commerce ranking data with a planted signal.

A *world* (users, items, brands, categories, query buckets) is drawn from the seed alone. *Requests*
(a user typing a query at some hour on some device, shown `CANDIDATES` candidate items) are drawn in
chunks of `CHUNK` requests, each chunk from its own seed `(seed, split, chunk index)`: any row of any split
can be regenerated without generating the rows before it, and the golden set does not move when the
training set grows.

Public API (used by the build, the tests and the rehearsal's load generator):

- `FEATURES`: the model's input signature (sparse id columns, dense columns), in column order.
- `golden_batch(seed, n, start=0) -> {"sparse_ids": int32 [n, 8], "dense": float32 [n, 8]}`: real feature
  rows from the golden split, the same rows the build's parity gates use. Send these to Triton.
- `make_split(seed, split, n_requests) -> Split`: features, labels, the true click logit (for the oracle AUC)
  and request ids, for "train", "validation" or "golden".

The planted signal, in order of strength: the item's category against the query's categories
(query x category), the user's segment taste for the item's category and a latent user x item affinity
(user x item), brand quality, popularity, the user's price sensitivity against the item's price relative to
its category, item age, and a small device x price and hour effect. Labels are Bernoulli draws from the
sigmoid of that logit, so even a perfect model stays well below AUC 1.0; `Split.logit` lets callers report
the oracle AUC next to the learned one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TypedDict

import numpy as np

GENERATOR_VERSION = "1"  # bump when the generator's output changes for a given seed
DEFAULT_SEED = 20261100
CANDIDATES = 32  # candidate items per ranking request (one request = one row per candidate)
CHUNK = 256  # requests per independently seeded chunk

N_USERS, N_ITEMS, N_BRANDS, N_CATS, N_QUERIES = 1000, 5000, 300, 50, 400
N_DEVICES, N_HOURS, N_PRICE_BUCKETS, N_SEGMENTS, LATENT = 3, 24, 16, 12, 4

# Column order is the model's input signature; cardinality excludes the out-of-vocabulary row the model adds.
SPARSE: tuple[tuple[str, int], ...] = (
    ("user_id", N_USERS),
    ("item_id", N_ITEMS),
    ("brand_id", N_BRANDS),
    ("category_id", N_CATS),
    ("query_bucket", N_QUERIES),
    ("device", N_DEVICES),
    ("hour", N_HOURS),
    ("price_bucket", N_PRICE_BUCKETS),
)
DENSE: tuple[str, ...] = (
    "log_price",
    "price_vs_category",
    "log_age_days",
    "log_popularity",
    "text_match",
    "log_user_activity",
    "hour_sin",
    "hour_cos",
)


class Features(TypedDict):
    sparse: list[str]
    dense: list[str]
    cardinalities: list[int]


FEATURES: Features = {
    "sparse": [n for n, _ in SPARSE],
    "dense": list(DENSE),
    "cardinalities": [c for _, c in SPARSE],
}
SPLITS = {"train": 1, "validation": 2, "golden": 3}


@dataclass(frozen=True)
class World:
    item_cat: np.ndarray
    item_brand: np.ndarray
    item_log_price: np.ndarray
    item_age: np.ndarray
    item_pop: np.ndarray  # sampling weight, long-tailed
    item_lat: np.ndarray
    cat_w: np.ndarray
    cat_price_mu: np.ndarray
    brand_q: np.ndarray
    user_seg: np.ndarray
    user_lat: np.ndarray
    user_price_sens: np.ndarray
    user_activity: np.ndarray
    seg_taste: np.ndarray  # [segments, cats], standardised log preference
    query_cats: np.ndarray  # [queries, 2]: primary, secondary category
    query_w: np.ndarray
    cat_sorted_items: np.ndarray  # items sorted by category
    cat_cum: np.ndarray  # category index + within-category cumulative popularity, for vectorised sampling


def _zipf(n: int, a: float, offset: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / (np.arange(n) + offset) ** a
    return (w / w.sum())[rng.permutation(n)]


@lru_cache(maxsize=4)
def world(seed: int) -> World:
    """The catalogue and the population; depends on the seed only."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    cat_w = _zipf(N_CATS, 0.8, 2.0, rng)
    item_cat = rng.choice(N_CATS, N_ITEMS, p=cat_w)
    # Every category gets at least one item so a query never points at an empty shelf.
    item_cat[:N_CATS] = np.arange(N_CATS)
    brand_cat = rng.choice(N_CATS, N_BRANDS, p=cat_w)
    brand_cat[:N_CATS] = np.arange(N_CATS)
    item_brand = np.empty(N_ITEMS, dtype=np.int64)
    for c in range(N_CATS):
        idx = np.flatnonzero(item_cat == c)
        item_brand[idx] = rng.choice(np.flatnonzero(brand_cat == c), idx.size)
    cat_price_mu = rng.uniform(2.0, 6.0, N_CATS)
    item_log_price = cat_price_mu[item_cat] + rng.normal(0, 0.5, N_ITEMS)
    item_age = rng.exponential(120.0, N_ITEMS) + 1.0
    item_pop = _zipf(N_ITEMS, 1.1, 10.0, rng)
    item_lat = rng.normal(0, 1, (N_ITEMS, LATENT))
    brand_q = rng.normal(0, 0.6, N_BRANDS)

    seg_taste = np.log(rng.dirichlet(np.full(N_CATS, 0.3), N_SEGMENTS) + 1e-3)
    seg_taste = (seg_taste - seg_taste.mean()) / seg_taste.std()
    seg_lat = rng.normal(0, 1, (N_SEGMENTS, LATENT))
    user_seg = rng.integers(0, N_SEGMENTS, N_USERS)
    user_lat = seg_lat[user_seg] + 0.5 * rng.normal(0, 1, (N_USERS, LATENT))
    user_price_sens = rng.normal(0.6, 0.3, N_SEGMENTS)[user_seg] + rng.normal(0, 0.1, N_USERS)
    user_activity = rng.lognormal(0, 0.8, N_USERS)

    primary = rng.choice(N_CATS, N_QUERIES, p=cat_w)
    secondary = (primary + rng.integers(1, N_CATS, N_QUERIES)) % N_CATS
    query_w = _zipf(N_QUERIES, 0.9, 5.0, rng)

    order = np.argsort(item_cat, kind="stable")
    cum = np.empty(N_ITEMS)
    for c in range(N_CATS):
        pos = np.flatnonzero(item_cat[order] == c)
        p = np.cumsum(item_pop[order[pos]])
        cum[pos] = c + p / p[-1]  # in (c, c + 1]; the category's last item is exactly c + 1
    return World(
        item_cat,
        item_brand,
        item_log_price,
        item_age,
        item_pop,
        item_lat,
        cat_w,
        cat_price_mu,
        brand_q,
        user_seg,
        user_lat,
        user_price_sens,
        user_activity,
        seg_taste,
        np.stack([primary, secondary], 1),
        query_w,
        order,
        cum,
    )


@dataclass(frozen=True)
class Split:
    sparse_ids: np.ndarray  # int32 [rows, len(SPARSE)]
    dense: np.ndarray  # float32 [rows, len(DENSE)]
    labels: np.ndarray  # float32 [rows]
    logit: np.ndarray  # float32 [rows], the planted click logit (oracle)
    request: np.ndarray  # int64 [rows], request index within the split

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {"sparse_ids": self.sparse_ids[start:stop], "dense": self.dense[start:stop]}


def _chunk(seed: int, split: str, k: int) -> Split:
    """Requests [k*CHUNK, (k+1)*CHUNK) of a split, from their own seed."""
    w = world(seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], k]))
    r, c = CHUNK, CANDIDATES
    act = w.user_activity / w.user_activity.sum()
    user = rng.choice(N_USERS, r, p=act)
    query = rng.choice(N_QUERIES, r, p=w.query_w)
    hour = (rng.normal(20, 4, r).round() % 24).astype(np.int64)  # evening peak
    device = rng.choice(N_DEVICES, r, p=[0.6, 0.3, 0.1])

    # Candidate retrieval: about half from the query's categories (by popularity), half from the global
    # head, as a first-stage retriever would hand over.
    relevant = rng.random((r, c)) < 0.5
    which = np.where(rng.random((r, c)) < 0.7, 0, 1)
    cat_pick = w.query_cats[query][np.arange(r)[:, None], which]
    u = cat_pick + (1.0 - rng.random((r, c)))  # in (c, c + 1]: lands inside category c's range of cat_cum
    from_cat = w.cat_sorted_items[np.minimum(np.searchsorted(w.cat_cum, u, side="left"), N_ITEMS - 1)]
    from_head = rng.choice(N_ITEMS, (r, c), p=w.item_pop)
    item = np.where(relevant, from_cat, from_head)

    U, Q = np.repeat(user, c), np.repeat(query, c)
    H, D, It = np.repeat(hour, c), np.repeat(device, c), item.reshape(-1)
    cat, brand = w.item_cat[It], w.item_brand[It]
    match = np.where(cat == w.query_cats[Q, 0], 1.0, np.where(cat == w.query_cats[Q, 1], 0.6, 0.0))
    taste = w.seg_taste[w.user_seg[U], cat]
    affinity = (w.user_lat[U] * w.item_lat[It]).sum(1) / np.sqrt(LATENT)
    log_pop = np.log(w.item_pop[It] * N_ITEMS)
    rel_price = w.item_log_price[It] - w.cat_price_mu[cat]
    log_age = np.log(w.item_age[It])
    mobile = (D == 1).astype(float)
    evening = ((H >= 18) & (H <= 22)).astype(float)
    logit = (
        -2.2
        + 2.2 * match
        + 0.55 * taste
        + 0.5 * affinity
        + 0.9 * w.brand_q[brand]
        + 0.25 * log_pop
        - 1.0 * w.user_price_sens[U] * rel_price
        - 0.3 * (log_age - 4.0)
        - 0.3 * mobile * rel_price
        + 0.15 * evening
    )
    labels = (rng.random(logit.shape) < 1 / (1 + np.exp(-logit))).astype(np.float32)

    price_bucket = np.clip(
        ((w.item_log_price[It] - 1.0) / 6.0 * N_PRICE_BUCKETS).astype(np.int64), 0, N_PRICE_BUCKETS - 1
    )
    sparse = np.stack([U, It, brand, cat, Q, D, H, price_bucket], 1).astype(np.int32)
    dense = np.stack(
        [
            w.item_log_price[It],
            rel_price,
            log_age,
            log_pop + rng.normal(0, 0.3, It.shape),  # observed popularity is a noisy count
            match + rng.normal(0, 0.6, It.shape),  # a lexical match score: informative, not the truth
            np.log(w.user_activity[U]),
            np.sin(2 * np.pi * H / 24),
            np.cos(2 * np.pi * H / 24),
        ],
        1,
    ).astype(np.float32)
    req = np.repeat(np.arange(k * CHUNK, (k + 1) * CHUNK), c)
    return Split(sparse, dense, labels, logit.astype(np.float32), req)


def _concat(parts: list[Split]) -> Split:
    return Split(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("sparse_ids", "dense", "labels", "logit", "request"))
    )


def make_split(seed: int, split: str, n_requests: int) -> Split:
    """The first `n_requests` requests (n_requests * CANDIDATES rows) of a split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    chunks = [_chunk(seed, split, k) for k in range(-(-n_requests // CHUNK))]
    s = _concat(chunks)
    n = n_requests * CANDIDATES
    return Split(s.sparse_ids[:n], s.dense[:n], s.labels[:n], s.logit[:n], s.request[:n])


def rows(seed: int, split: str, start: int, n: int) -> Split:
    """Rows [start, start + n) of a split, generating only the chunks that hold them."""
    if start < 0 or n < 0:
        raise ValueError("start and n must be >= 0")
    per_chunk = CHUNK * CANDIDATES
    first, last = start // per_chunk, (start + n - 1) // per_chunk if n else start // per_chunk
    s = _concat([_chunk(seed, split, k) for k in range(first, last + 1)])
    a = start - first * per_chunk
    return Split(
        s.sparse_ids[a : a + n], s.dense[a : a + n], s.labels[a : a + n], s.logit[a : a + n], s.request[a : a + n]
    )


def golden_batch(seed: int = DEFAULT_SEED, n: int = 4096, start: int = 0) -> dict[str, np.ndarray]:
    """`n` real feature rows from the golden split (the parity gates' rows): Triton's request tensors.

    Rows come in requests of `CANDIDATES` consecutive rows (one user and query, many items); `start`
    pages through the split deterministically, so a load generator can send fresh rows forever.
    """
    s = rows(seed, "golden", start, n)
    return {"sparse_ids": np.ascontiguousarray(s.sparse_ids), "dense": np.ascontiguousarray(s.dense)}
