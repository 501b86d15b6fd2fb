"""Image / place retrieval evaluation: ranking a database, Recall@N, and ground-truth positives.

The metric is the standard visual place recognition Recall@N (NetVLAD, Pittsburgh/Tokyo 24/7,
gmberton's deep-visual-geo-localization-benchmark and VPR-methods-evaluation): a query counts as a
hit at N when at least one of its N nearest database entries is a positive. Positives come either
from geography (`positives_by_distance`: database images within 25 m, UTM easting/northing) or
from identity (`positives_by_id`: the same shape, for view-based retrieval on rendered ModelNet40
views, where `view_retrieval_split` keeps each query out of its own database).

Queries without any positive. Both conventions are in use:

- gmberton's benchmark (``test.py``) and VPR-methods-evaluation (``main.py``) divide the hit count
  by *all* queries, so a query without positive is a miss;
- the official Mapillary SLS loader (``mapillary_sls/datasets/msls.py``) keeps only queries that
  have at least one positive, so such queries are left out of the denominator, and the benchmark's
  training set drops them the same way.

Where every query has a positive the two agree.

`recall_at_k` defaults to ``no_positive="exclude"`` (the MSLS convention: a query that cannot be
answered says nothing about the descriptor) and offers ``"miss"`` to reproduce gmberton's numbers
exactly; it always reports how many queries were used and how many had no positive.

Ranking is exact and deterministic: scores are computed in float64, chunk by chunk (``chunk``
distinct queries at a time, so memory is a few ``chunk x M`` float64 score matrices), once per
distinct feature vector so identical vectors tie exactly, and ties go to the lower database index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from svl.data.readers.vpr import positives_by_distance  # ground truth of the data floor, re-exported

__all__ = [
    "format_recalls",
    "positives_by_distance",
    "positives_by_id",
    "rank_database",
    "recall_at_k",
    "view_retrieval_split",
]

_METRICS = ("cosine", "l2")


# ----------------------------------------------------------------------------- input checks
def _as_feats(x: Any, what: str) -> torch.Tensor:
    """(N, D) float64 tensor on the input's device (numpy -> CPU); rejects empty and non-finite input."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        a = np.asarray(x)
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise ValueError(f"{what} features must be numeric, got dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.ndim != 2:
        raise ValueError(f"{what} features must be a (N, D) matrix, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"empty {what}: 0 feature vectors")
    if t.shape[1] == 0:
        raise ValueError(f"{what} features have dimension 0")
    t = t.to(torch.float64)
    finite = torch.isfinite(t).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        first = int(torch.nonzero(~finite)[0, 0])
        raise ValueError(
            f"{what} features hold NaN or inf in {bad} of {t.shape[0]} rows (first: row {first})"
        )
    return t


def _pair(query: Any, db: Any, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    q = _as_feats(query, "query")
    d = _as_feats(db, "database")
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"feature dimensions differ: query D={q.shape[1]}, database D={d.shape[1]}")
    if q.device != d.device:
        d = d.to(q.device)
    return q, d


def _check_chunk(chunk: int) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int | np.integer) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return int(chunk)


# ----------------------------------------------------------------------------- ranking
def _order_by_score_then_index(vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Reorder candidate indices by (-score, index): sort by index, then a stable sort by score."""
    idx, perm = torch.sort(idx, dim=1)
    vals = torch.gather(vals, 1, perm)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return torch.gather(idx, 1, order)


def _top_k_stable(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores per row, ties broken by the lower column index.

    torch.topk is not stable: its k picks are reordered by (-score, index), and rows where the k-th
    score is shared with columns left out (a tie across the boundary) are redone with every column
    that reaches it, so the lowest indices among the tied ones are kept.
    """
    vals, idx = torch.topk(scores, k, dim=1)
    kth = vals[:, -1:]
    out = _order_by_score_then_index(vals, idx)
    wide = torch.nonzero((scores >= kth).sum(dim=1) > k).reshape(-1)
    if wide.numel():
        sub = scores[wide]
        masked = sub.masked_fill(sub < kth[wide], float("-inf"))
        width = int((masked > float("-inf")).sum(dim=1).max())
        v, i = torch.topk(masked, width, dim=1)
        out[wide] = _order_by_score_then_index(v, i)[:, :k]
    return out


def rank_database(query: Any, db: Any, k: int, metric: str = "cosine", chunk: int = 1024) -> torch.Tensor:
    """(Q, min(k, M)) LongTensor (CPU) of database indices, best first, for each query.

    ``metric``: "cosine" (features L2-normalised, larger dot product is better; an all-zero vector
    scores 0 against everything) or "l2" (smaller Euclidean distance is better). Ties go to the lower
    database index, so the ranking is reproducible. k above the database size is clamped to M.
    """
    q, d = _pair(query, db, metric)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    chunk = _check_chunk(chunk)
    k = min(int(k), d.shape[0])
    # Scores are computed once per distinct vector: BLAS can round the same dot product differently
    # at different matrix positions, and duplicates (repeated images, untrained models) must tie exactly.
    q_u, q_inv = torch.unique(q, dim=0, return_inverse=True)
    d_u, d_inv = torch.unique(d, dim=0, return_inverse=True)
    q_dup, d_dup = q_u.shape[0] < q.shape[0], d_u.shape[0] < d.shape[0]
    if q_dup:
        q = q_u
    if d_dup:
        d = d_u
    if metric == "cosine":
        q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        d_sq = None
    else:
        d_sq = (d * d).sum(dim=1)
    out = []
    dt = d.T.contiguous()
    for s in range(0, q.shape[0], chunk):
        sim = q[s : s + chunk] @ dt
        if d_sq is not None:  # -||q - d||^2 up to the per-row constant ||q||^2, which cannot reorder a row
            sim.mul_(2.0).sub_(d_sq)
        out.append(_top_k_stable(sim[:, d_inv] if d_dup else sim, k).cpu())
    ranks = torch.cat(out)
    return (ranks[q_inv.cpu()] if q_dup else ranks).to(torch.long)


# ----------------------------------------------------------------------------- recall
def _check_positives(positives: Sequence[Any], nq: int, m: int) -> list[np.ndarray]:
    if len(positives) != nq:
        raise ValueError(f"got positives for {len(positives)} queries but {nq} query feature rows")
    out = []
    for i, p in enumerate(positives):
        a = np.zeros(0, np.int64) if p is None else np.asarray(p).reshape(-1)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            if not (np.issubdtype(a.dtype, np.number) and np.all(np.mod(a, 1) == 0)):
                raise ValueError(f"positives of query {i} must be integer database indices, got {a[:5]!r}")
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= m):
            raise ValueError(
                f"positives of query {i} hold database index {int(a.min() if a.min() < 0 else a.max())}, "
                f"outside [0, {m})"
            )
        out.append(a)
    return out


def recall_at_k(
    query_feats: Any,
    db_feats: Any,
    positives: Sequence[Any],
    ks: Sequence[int] = (1, 5, 10),
    metric: str = "cosine",
    chunk: int = 1024,
    no_positive: str = "exclude",
) -> dict[str, float]:
    """Recall@N: the fraction of queries with a positive among their top-N database results.

    Returns ``{"recall@<k>": fraction for each k in ks, "queries": queries in the denominator,
    "no_positive": queries that have no positive}``. k larger than the database is clamped to M (the
    key keeps the k asked for). ``no_positive="exclude"`` (default, MSLS convention) leaves queries
    without positive out of the denominator; ``"miss"`` counts them as misses (gmberton's
    benchmark). See the module docstring for the sources.
    """
    if no_positive not in ("exclude", "miss"):
        raise ValueError(f"no_positive must be 'exclude' or 'miss', got {no_positive!r}")
    ks = [ks] if isinstance(ks, int | np.integer) else list(ks)
    if not ks:
        raise ValueError("ks is empty: give at least one N for Recall@N")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"every k in ks must be a positive integer, got {k!r}")
    q, d = _pair(query_feats, db_feats, metric)
    nq, m = q.shape[0], d.shape[0]
    pos = _check_positives(positives, nq, m)
    has = np.array([p.size > 0 for p in pos], dtype=bool)
    n_missing = int((~has).sum())
    used = np.nonzero(has)[0]
    denom = len(used) if no_positive == "exclude" else nq
    if denom == 0:
        raise ValueError(f"none of the {nq} queries has a positive in the database: Recall@N is undefined")

    kmax = min(max(int(k) for k in ks), m)
    first_hit = np.full(len(used), np.iinfo(np.int64).max, dtype=np.int64)  # rank of the first positive
    if len(used):
        ranks = rank_database(q[torch.as_tensor(used, device=q.device)], d, kmax, metric, chunk).numpy()
        for j, qi in enumerate(used):
            hit = np.nonzero(np.isin(ranks[j], pos[qi]))[0]
            if hit.size:
                first_hit[j] = hit[0]
    result: dict[str, float] = {}
    for k in ks:
        result[f"recall@{int(k)}"] = float((first_hit < min(int(k), m)).sum()) / denom
    result["queries"] = denom
    result["no_positive"] = n_missing
    return result


def format_recalls(result: dict[str, Any]) -> str:
    """A two-line table of Recall@N in percent, with the query counts, for logs and reports."""
    keys = sorted((k for k in result if k.startswith("recall@")), key=lambda s: int(s.split("@")[1]))
    heads = [f"R@{k.split('@')[1]}" for k in keys] + ["queries", "no positive"]
    vals = [f"{100.0 * float(result[k]):.1f}" for k in keys]
    vals += [str(int(result.get("queries", 0))), str(int(result.get("no_positive", 0)))]
    widths = [max(len(h), len(v)) for h, v in zip(heads, vals)]
    line1 = "  ".join(h.rjust(w) for h, w in zip(heads, widths))
    line2 = "  ".join(v.rjust(w) for v, w in zip(vals, widths))
    return f"{line1}\n{line2}"


# ----------------------------------------------------------------------------- ground truth
def positives_by_id(query_ids: Any, db_ids: Any, exclude_self: np.ndarray | None = None) -> list[np.ndarray]:
    """Per query, the sorted database indices that carry the same id (e.g. the same shape).

    ``exclude_self``: (Q,) database index to drop from each query's positives (the query's own
    entry when the query set is part of the database; -1 = nothing to drop).
    """
    qa = np.asarray(query_ids.detach().cpu().numpy() if hasattr(query_ids, "detach") else query_ids)
    da = np.asarray(db_ids.detach().cpu().numpy() if hasattr(db_ids, "detach") else db_ids)
    if qa.ndim != 1 or da.ndim != 1:
        raise ValueError(f"ids must be 1-D arrays, got query {qa.shape} and database {da.shape}")
    if qa.size == 0 or da.size == 0:
        raise ValueError(f"empty ids: {qa.size} query ids, {da.size} database ids")
    _, inv = np.unique(np.concatenate([qa, da]), return_inverse=True)
    inv = inv.reshape(-1)
    q_code, d_code = inv[: qa.size], inv[qa.size :]
    order = np.argsort(d_code, kind="stable")  # db indices grouped by id, ascending within a group
    bounds = np.searchsorted(d_code[order], np.arange(inv.max() + 2))
    ex = None
    if exclude_self is not None:
        ex = np.asarray(exclude_self).reshape(-1).astype(np.int64)
        if ex.shape[0] != qa.size:
            raise ValueError(f"exclude_self has {ex.shape[0]} entries for {qa.size} queries")
    out = []
    for i, c in enumerate(q_code):
        p = order[bounds[c] : bounds[c + 1]].astype(np.int64)
        if ex is not None and ex[i] >= 0:
            p = p[p != ex[i]]
        out.append(p)
    return out


def view_retrieval_split(shape_ids: Any, views: Any, query_view: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(query_idx, db_idx) for view-based retrieval: queries are the samples rendered at
    ``query_view``, the database is every other sample, so a query never meets itself.

    Shapes without a ``query_view`` sample stay in the database as distractors. A queried shape
    needs at least one other view in the database, else it could never be found.
    """
    sid = np.asarray(shape_ids.detach().cpu().numpy() if hasattr(shape_ids, "detach") else shape_ids)
    vw = np.asarray(views.detach().cpu().numpy() if hasattr(views, "detach") else views)
    if sid.ndim != 1 or vw.ndim != 1 or sid.shape != vw.shape:
        raise ValueError(
            f"shape_ids and views must be 1-D arrays of one length, got {sid.shape} and {vw.shape}"
        )
    if sid.size == 0:
        raise ValueError("empty set: 0 samples")
    is_q = vw == query_view
    q_idx = np.nonzero(is_q)[0].astype(np.int64)
    db_idx = np.nonzero(~is_q)[0].astype(np.int64)
    if q_idx.size == 0:
        found = np.unique(vw)
        raise ValueError(f"no sample has view {query_view!r}; views present: {found[:10].tolist()}")
    lonely = np.setdiff1d(np.unique(sid[q_idx]), np.unique(sid[db_idx]))
    if lonely.size:
        raise ValueError(
            f"{lonely.size} shape(s) have only view {query_view!r} (e.g. shape {lonely[0]!r}): view "
            "retrieval needs at least 2 views per queried shape, one as the query and one in the database"
        )
    return q_idx, db_idx
