"""Retrieval evaluation (svl.eval.retrieval) and the VPR dataset reader (svl.data.readers.vpr).

Why: Recall@N numbers are only comparable with published VPR results if ranking, tie-breaking and
the positive sets match the standard protocol, so everything is checked against brute-force numpy
references, and the reader is run on a real little on-disk dataset in the downloader's layout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svl.data.readers.vpr import VPRSplit, parse_utm, read_vpr
from svl.eval.retrieval import (
    format_recalls,
    positives_by_distance,
    positives_by_id,
    rank_database,
    recall_at_k,
    view_retrieval_split,
)


# ----------------------------------------------------------------------------- references
def ref_rank(q: np.ndarray, d: np.ndarray, metric: str) -> np.ndarray:
    """Full ranking per query by (score, then lower index), one query at a time."""
    out = []
    for row in q:
        if metric == "cosine":
            qn = row / max(np.linalg.norm(row), 1e-12)
            dn = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
            key = -(dn @ qn)
        else:
            key = ((d - row) ** 2).sum(1)
        out.append(np.lexsort((np.arange(len(d)), key)))
    return np.array(out)


def ref_recall(q, d, positives, ks, metric, no_positive="exclude") -> dict[str, float]:
    order = ref_rank(q, d, metric)
    has = [len(p) > 0 for p in positives]
    denom = sum(has) if no_positive == "exclude" else len(q)
    res = {}
    for k in ks:
        hits = sum(1 for i, p in enumerate(positives) if len(p) and np.isin(order[i, :k], p).any())
        res[f"recall@{k}"] = hits / denom
    res["queries"] = denom
    res["no_positive"] = len(q) - sum(has)
    return res


def random_positives(rng: np.random.Generator, nq: int, m: int) -> list[np.ndarray]:
    pos = []
    for i in range(nq):
        n = 0 if i % 7 == 3 else int(rng.integers(1, 4))  # some queries have no positive
        pos.append(np.sort(rng.choice(m, size=n, replace=False)))
    return pos


# ----------------------------------------------------------------------------- ranking and recall
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_rank_matches_bruteforce_random(metric: str) -> None:
    rng = np.random.default_rng(1)
    q, d = rng.normal(size=(37, 8)), rng.normal(size=(53, 8))
    ref = ref_rank(q, d, metric)
    for k in (1, 5, 10, 53, 200):
        got = rank_database(q, d, k, metric=metric, chunk=10)
        assert got.dtype == torch.long and got.shape == (37, min(k, 53))
        np.testing.assert_array_equal(got.numpy(), ref[:, : min(k, 53)])
    # a torch float32 input ranks the same as numpy float64 input of the same values
    q32, d32 = torch.from_numpy(q).float(), torch.from_numpy(d).float()
    got32 = rank_database(q32, d32, 10, metric=metric)
    np.testing.assert_array_equal(
        got32.numpy(), ref_rank(q32.double().numpy(), d32.double().numpy(), metric)[:, :10]
    )


def test_rank_ties_break_by_lower_index() -> None:
    rng = np.random.default_rng(2)
    # l2 on small integers: every distance is exact, so mathematically equal distances tie exactly
    q = rng.integers(-1, 2, size=(30, 3)).astype(np.float64)
    d = rng.integers(-1, 2, size=(40, 3)).astype(np.float64)
    ref = ref_rank(q, d, "l2")
    for k in (1, 3, 7, 40, 50):
        np.testing.assert_array_equal(rank_database(q, d, k, "l2", chunk=7).numpy(), ref[:, : min(k, 40)])
    # cosine: a database made of repeated rows (exact duplicates tie exactly)
    base = rng.normal(size=(9, 6))
    d2 = base[rng.integers(0, 9, size=45)]
    q2 = np.concatenate([rng.normal(size=(10, 6)), d2[:5]])
    ref2 = ref_rank(q2, d2, "cosine")
    for k in (1, 4, 12, 45):
        np.testing.assert_array_equal(rank_database(q2, d2, k, "cosine", chunk=4).numpy(), ref2[:, :k])
    # an all-zero query scores 0 against everything: the lowest indices win
    z = rank_database(np.zeros((1, 6)), d2, 5, "cosine")
    np.testing.assert_array_equal(z.numpy(), [[0, 1, 2, 3, 4]])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("no_positive", ["exclude", "miss"])
def test_recall_matches_bruteforce(metric: str, no_positive: str) -> None:
    rng = np.random.default_rng(3)
    q, d = rng.normal(size=(50, 5)), rng.normal(size=(30, 5))
    pos = random_positives(rng, 50, 30)
    ks = (1, 2, 5, 10, 100)  # 100 > M = 30 is clamped
    got = recall_at_k(q, d, pos, ks=ks, metric=metric, chunk=8, no_positive=no_positive)
    ref = ref_recall(q, d, pos, [min(k, 30) for k in ks], metric, no_positive)
    for k in ks:
        assert got[f"recall@{k}"] == pytest.approx(ref[f"recall@{min(k, 30)}"], abs=1e-12)
    assert got["queries"] == ref["queries"] and got["no_positive"] == ref["no_positive"] == 7
    assert got["recall@100"] == pytest.approx(1.0 if no_positive == "exclude" else 43 / 50)
    # integer features: ties everywhere, still identical to the reference
    qi = rng.integers(-1, 2, size=(40, 3)).astype(float)
    di = rng.integers(-1, 2, size=(25, 3)).astype(float)
    pos_i = random_positives(rng, 40, 25)
    got_i = recall_at_k(qi, di, pos_i, ks=(1, 3, 5), metric="l2", chunk=16, no_positive=no_positive)
    ref_i = ref_recall(qi, di, pos_i, (1, 3, 5), "l2", no_positive)
    assert got_i == pytest.approx(ref_i)


def test_recall_hand_built() -> None:
    db = np.array([[0.0, 0.0], [10.0, 0.0], [11.0, 0.0], [12.0, 0.0], [13.0, 0.0], [50.0, 50.0]])
    q = np.array([[0.1, 0.0], [10.1, 0.0]])
    # query 0: nearest is db 0 (a positive); query 1: positive db 4 is only its 4th neighbour
    pos = [np.array([0]), np.array([4])]
    res = recall_at_k(q, db, pos, ks=(1, 5, 10), metric="l2")
    assert res == {"recall@1": 0.5, "recall@5": 1.0, "recall@10": 1.0, "queries": 2, "no_positive": 0}
    table = format_recalls(res)
    assert "R@1" in table and "50.0" in table and "100.0" in table and "queries" in table
    # a third query without positive: excluded by default, a miss with no_positive="miss"
    q3, pos3 = np.vstack([q, [[30.0, 30.0]]]), [*pos, np.array([], dtype=int)]
    assert recall_at_k(q3, db, pos3, metric="l2")["recall@1"] == 0.5
    miss = recall_at_k(q3, db, pos3, metric="l2", no_positive="miss")
    assert miss["recall@5"] == pytest.approx(2 / 3) and miss["queries"] == 3 and miss["no_positive"] == 1


def test_recall_errors() -> None:
    q, d, pos = np.ones((3, 4)), np.ones((5, 4)), [np.array([0])] * 3
    with pytest.raises(ValueError, match="dimensions differ"):
        recall_at_k(q, np.ones((5, 3)), pos)
    with pytest.raises(ValueError, match="empty query"):
        recall_at_k(np.ones((0, 4)), d, [])
    with pytest.raises(ValueError, match="empty database"):
        rank_database(q, np.ones((0, 4)), 1)
    bad = q.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(bad, d, pos)
    with pytest.raises(ValueError, match="NaN"):
        rank_database(q, torch.full((5, 4), float("inf")), 1)
    with pytest.raises(ValueError, match="3 query"):
        recall_at_k(q, d, pos[:2])
    with pytest.raises(ValueError, match="outside"):
        recall_at_k(q, d, [np.array([5])] * 3)
    with pytest.raises(ValueError, match="metric"):
        recall_at_k(q, d, pos, metric="dot")
    with pytest.raises(ValueError, match="none of the 3 queries"):
        recall_at_k(q, d, [np.array([], dtype=int)] * 3)


# ----------------------------------------------------------------------------- ground truth
def ref_within(q: np.ndarray, d: np.ndarray, thr: float) -> list[np.ndarray]:
    dist = np.sqrt(((q[:, None, :] - d[None, :, :]) ** 2).sum(-1))
    return [np.nonzero(row <= thr)[0] for row in dist]


@pytest.mark.parametrize("use_sklearn", [True, False])
def test_positives_by_distance(use_sklearn: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not use_sklearn:
        monkeypatch.setitem(sys.modules, "sklearn.neighbors", None)  # import fails: numpy fallback
    rng = np.random.default_rng(4)
    east0, north0 = 584000.0, 4477000.0  # realistic UTM magnitudes
    d = rng.uniform(0, 150, size=(300, 2)) + [east0, north0]
    q = rng.uniform(0, 150, size=(40, 2)) + [east0, north0]
    q[0] = d[7] + [15.0, 20.0]  # exactly 25 m away: inside (the radius is inclusive)
    got = positives_by_distance(q, d, 25.0)
    ref = ref_within(q, d, 25.0)
    assert len(got) == 40 and 7 in got[0]
    for g, r in zip(got, ref):
        assert g.dtype == np.int64 and np.all(np.diff(g) > 0)
        np.testing.assert_array_equal(g, r)
    far = positives_by_distance(q, d, 1e-3)
    assert all(len(x) == 0 for x in far[1:5])
    with pytest.raises(ValueError, match="shape"):
        positives_by_distance(q[:, :1], d)
    with pytest.raises(ValueError, match="threshold"):
        positives_by_distance(q, d, -1.0)


def test_view_split_and_positives_by_id() -> None:
    rng = np.random.default_rng(5)
    n_shapes, n_views = 10, 4
    sid = np.repeat(np.arange(n_shapes), n_views)
    views = np.tile(np.arange(n_views), n_shapes)
    perm = rng.permutation(len(sid))
    sid, views = sid[perm], views[perm]
    q_idx, db_idx = view_retrieval_split(sid, views, query_view=0)
    assert len(q_idx) == n_shapes and len(db_idx) == n_shapes * (n_views - 1)
    assert not set(q_idx) & set(db_idx) and np.all(views[q_idx] == 0)
    pos = positives_by_id(sid[q_idx], sid[db_idx])
    for i, p in enumerate(pos):
        assert len(p) == n_views - 1 and np.all(sid[db_idx[p]] == sid[q_idx[i]])
    # perfect features (one-hot per shape + noise): the top hit is another view of the same shape
    feats = np.eye(n_shapes)[sid] + 0.01 * rng.normal(size=(len(sid), n_shapes))
    ranks = rank_database(feats[q_idx], feats[db_idx], 3).numpy()
    assert np.all(db_idx[ranks] != q_idx[:, None])  # a query never retrieves itself
    res = recall_at_k(feats[q_idx], feats[db_idx], pos, ks=(1, 5))
    assert res["recall@1"] == 1.0 and res["queries"] == n_shapes
    # query set == database: exclude_self drops the query's own entry
    pos_all = positives_by_id(sid, sid, exclude_self=np.arange(len(sid)))
    assert all(i not in p and len(p) == n_views - 1 for i, p in enumerate(pos_all))
    # string ids work too
    assert [p.tolist() for p in positives_by_id(np.array(["a", "b"]), np.array(["b", "c", "a", "b"]))] == [
        [2],
        [0, 3],
    ]
    # a shape with a single view cannot be queried
    with pytest.raises(ValueError, match="at least 2 views"):
        view_retrieval_split(np.array([0, 0, 1]), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="no sample has view 7"):
        view_retrieval_split(sid, views, query_view=7)


# ----------------------------------------------------------------------------- VPR reader
def vpr_name(east: float, north: float, tag: str, ext: str = ".jpg") -> str:
    return f"@{east:.2f}@{north:.2f}@17@T@40.4406@-79.9959@{tag}@@@@@@@{ext}"


def write_image(path: Path, digit: np.ndarray) -> None:
    """A real little image: an 8x8 sklearn digit upscaled to 32x32 RGB."""
    g = (digit * (255.0 / 16.0)).astype(np.uint8)
    img = Image.fromarray(g).resize((32, 32), Image.NEAREST).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG")


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images


E0, N0 = 584000.0, 4477000.0
DB_XY = [(0.0, 0.0), (10.0, 0.0), (100.0, 0.0), (100.0, 20.0), (300.0, 300.0), (0.0, 24.0)]
Q_XY = [(1.0, 1.0), (100.0, 10.0), (1000.0, 1000.0)]  # the last has no database image within 25 m


def build_layout(base: Path, digits: np.ndarray) -> tuple[list[str], list[str]]:
    exts = [".jpg", ".png", ".JPEG", ".jpg", ".PNG", ".jpeg"]
    db = [vpr_name(E0 + x, N0 + y, f"db{i}", exts[i]) for i, (x, y) in enumerate(DB_XY)]
    qs = [vpr_name(E0 + x, N0 + y, f"q{i}") for i, (x, y) in enumerate(Q_XY)]
    for i, n in enumerate(db):
        write_image(base / "database" / n, digits[i])
    for i, n in enumerate(qs):
        write_image(base / "queries" / n, digits[10 + i])
    (base / "database" / "notes.txt").write_text("not an image")
    return db, qs


def test_read_vpr_standard_layout(tmp_path: Path, digits: np.ndarray) -> None:
    db, qs = build_layout(tmp_path / "images" / "test", digits)
    build_layout(tmp_path / "images" / "val", digits)
    s = read_vpr(tmp_path, split="test")
    assert isinstance(s, VPRSplit) and s.split == "test" and s.root == tmp_path
    assert [p.name for p in s.database] == sorted(db) and [p.name for p in s.queries] == sorted(qs)
    assert all(p.is_file() for p in s.database) and Image.open(s.queries[0]).size == (32, 32)
    assert s.db_utm.shape == (6, 2) and s.q_utm.shape == (3, 2)
    by_name = {vpr_name(E0 + x, N0 + y, f"db{i}", ""): (E0 + x, N0 + y) for i, (x, y) in enumerate(DB_XY)}
    for p, xy in zip(s.database, s.db_utm):
        assert tuple(xy) == pytest.approx(by_name[p.name[: -len(p.suffix)]])
    pos = s.positives()
    ref = ref_within(s.q_utm, s.db_utm, 25.0)
    assert [p.tolist() for p in pos] == [r.tolist() for r in ref]
    names = [[s.database[j].name.split("@")[7] for j in p] for p in pos]
    assert [sorted(n) for n in names] == [["db0", "db1", "db5"], ["db2", "db3"], []]
    assert [len(p) for p in s.positives(threshold=5.0)] == [1, 0, 0]
    assert "database=6" in repr(s) and "queries=3" in repr(s) and "25 m" in repr(s)
    # recall on the split with features = coordinates: query 0 and 1 are found, query 2 is excluded
    res = recall_at_k(s.q_utm - [E0, N0], s.db_utm - [E0, N0], pos, ks=(1,), metric="l2")
    assert res == {"recall@1": 1.0, "queries": 2, "no_positive": 1}


def test_read_vpr_other_layouts(tmp_path: Path, digits: np.ndarray) -> None:
    build_layout(tmp_path / "a" / "test", digits)  # ROOT/{split}/{database,queries}
    assert len(read_vpr(tmp_path / "a").database) == 6
    build_layout(tmp_path / "b", digits)  # ROOT/{database,queries}
    s = read_vpr(tmp_path / "b", split="val")
    assert len(s.queries) == 3 and s.positives()[0].size == 3
    assert parse_utm("/x@y/@12.5@-3@17@T@@@@@@@@@@@.jpg") == (12.5, -3.0)


def test_read_vpr_positives_file(tmp_path: Path, digits: np.ndarray) -> None:
    db, qs = build_layout(tmp_path / "images" / "test", digits)
    s0 = read_vpr(tmp_path)
    dbn = [p.name for p in s0.database]
    qn = [p.name for p in s0.queries]
    gt = tmp_path / "gt.txt"
    gt.write_text(f"# query db...\n{qn[1]} {dbn[4]} {dbn[0]}\n\n{qn[0]}\n")
    s = read_vpr(tmp_path, positives_file=gt)
    assert [p.tolist() for p in s.positives()] == [[], [0, 4], []]
    assert s.positives(threshold=1000.0)[1].tolist() == [0, 4]  # the list wins over coordinates
    assert "gt.txt" in repr(s)
    # .npy object array, one entry per query in sorted order
    arr = np.empty(3, dtype=object)
    arr[:] = [np.array([2]), np.array([], dtype=np.int64), np.array([5, 1])]
    np.save(tmp_path / "gt.npy", arr, allow_pickle=True)
    s2 = read_vpr(tmp_path, positives_file=tmp_path / "gt.npy")
    assert [p.tolist() for p in s2.positives()] == [[2], [], [1, 5]]
    np.savez(tmp_path / "gt.npz", positives=arr)
    assert read_vpr(tmp_path, positives_file=tmp_path / "gt.npz").positives()[2].tolist() == [1, 5]
    # with a positives file the names need no UTM fields
    write_image(tmp_path / "images" / "test" / "queries" / "plain.jpg", digits[20])
    s3 = read_vpr(tmp_path, positives_file=gt)
    assert len(s3.queries) == 4 and np.isnan(s3.q_utm).any()


def test_read_vpr_errors(tmp_path: Path, digits: np.ndarray) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_vpr(tmp_path / "nowhere")
    # no layout at all: every layout tried is named
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"tried ROOT/images/test/\{database,queries\}.*ROOT/test/.*ROOT/\{"
    ):
        read_vpr(tmp_path / "empty")
    # a split that is not there: the ones found are listed
    build_layout(tmp_path / "s" / "images" / "val", digits)
    with pytest.raises(FileNotFoundError, match="split folders found: val"):
        read_vpr(tmp_path / "s", split="test")
    # missing queries folder
    base = tmp_path / "noq" / "images" / "test"
    write_image(base / "database" / vpr_name(E0, N0, "d"), digits[0])
    with pytest.raises(FileNotFoundError, match=r"queries.*missing queries folder"):
        read_vpr(tmp_path / "noq")
    # empty database
    (base / "queries").mkdir()
    write_image(base / "queries" / vpr_name(E0, N0, "q"), digits[1])
    (base / "database" / vpr_name(E0, N0, "d")).unlink()
    with pytest.raises(ValueError, match=r"database: no images"):
        read_vpr(tmp_path / "noq")
    # an image name without UTM fields: the file and the expected pattern are named
    bad = tmp_path / "bad" / "images" / "test"
    build_layout(bad, digits)
    write_image(bad / "database" / "IMG_0001.jpg", digits[3])
    with pytest.raises(ValueError, match=r"IMG_0001\.jpg: no parseable UTM.*@UTM_east@UTM_north"):
        read_vpr(tmp_path / "bad")
    # a positives-file line naming an unknown image
    ok = tmp_path / "ok"
    db, qs = build_layout(ok / "images" / "test", digits)
    gt = tmp_path / "gt.txt"
    gt.write_text(f"{sorted(qs)[0]} {sorted(db)[0]}\n{sorted(qs)[1]} missing_db.jpg\n")
    with pytest.raises(ValueError, match=r"gt\.txt:2: unknown database image 'missing_db\.jpg'"):
        read_vpr(ok, positives_file=gt)
    gt.write_text("nobody.jpg\n")
    with pytest.raises(ValueError, match=r"gt\.txt:1: unknown query image 'nobody\.jpg'"):
        read_vpr(ok, positives_file=gt)
    with pytest.raises(FileNotFoundError, match="no such positives file"):
        read_vpr(ok, positives_file=tmp_path / "absent.txt")
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"garbage\.npy: unreadable positives array"):
        read_vpr(ok, positives_file=tmp_path / "garbage.npy")
    np.save(tmp_path / "short.npy", np.array([[0], [1]]))
    with pytest.raises(ValueError, match="positives for 2 queries, but 3"):
        read_vpr(ok, positives_file=tmp_path / "short.npy")
