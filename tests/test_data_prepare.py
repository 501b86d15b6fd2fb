"""svl.data.prepare: axis, resampling, unit sphere, colour and normals per checkpoint contract."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from svl.data import MISSING_COLOR, DegenerateCloudWarning, build_dataset, load_points, prepare
from svl.data.axes import rotate_axis

Z_UP = {"gravity_axis": "z", "color": "none", "num_points": None, "normals": False}


def _cloud(n: int = 500, seed: int = 0) -> np.ndarray:
    """An anisotropic cloud away from the origin, in file units: tall along z."""
    r = np.random.default_rng(seed)
    return (r.normal(size=(n, 3)) * [0.3, 0.5, 2.0] + [5.0, -3.0, 10.0]).astype(np.float32)


def _reference(xyz: np.ndarray, num_points: int | None, seed: int = 0) -> np.ndarray:
    """The test pipeline written out: seeded subset (or repetition), mean-centre, max radius 1."""
    x = np.asarray(xyz, np.float32)
    if num_points and num_points != len(x):
        x = x[np.random.default_rng(seed).choice(len(x), num_points, replace=len(x) < num_points)]
    x = x - x.mean(0)
    return (x / float(np.linalg.norm(x, axis=1).max())).astype(np.float32)


@pytest.mark.parametrize("num_points", [None, 0, 100, 500, 2048])
def test_matches_the_dataset_test_pipeline_and_a_closed_form(num_points):
    from svl.data.transforms import build_transforms

    xyz = _cloud()
    for seed in (0, 3):
        out = prepare({"xyz": xyz}, Z_UP, num_points=num_points, seed=seed)
        assert out["xyz"].dtype == np.float32
        steps = ([{"name": "random_sample", "num_points": num_points}] if num_points else []) + ["normalize"]
        pipeline = build_transforms(steps)({"xyz": xyz}, np.random.default_rng(seed))["xyz"]
        assert np.array_equal(out["xyz"], pipeline)
        assert np.array_equal(out["xyz"], _reference(xyz, num_points, seed))
    # num_points from the contract when the caller gives none
    out = prepare({"xyz": xyz}, dict(Z_UP, num_points=256))
    assert np.array_equal(out["xyz"], _reference(xyz, 256, 0))
    assert out["prepared"]["num_points"] == 256 and out["prepared"]["points_in"] == 500


def test_y_up_file_is_rotated_to_the_z_up_cloud(tmp_path):
    z_up = _cloud()
    np.save(tmp_path / "shape_yup.npy", rotate_axis(z_up, "z", "y"))  # the same shape stored y-up
    loaded = load_points(tmp_path / "shape_yup.npy")
    assert np.ptp(loaded["xyz"], 0).argmax() == 1  # tall along y as stored
    want = prepare({"xyz": z_up}, Z_UP, num_points=300)["xyz"]
    out = prepare(loaded, Z_UP, up_axis="y", num_points=300)
    assert np.array_equal(out["xyz"], want)
    assert out["prepared"]["up_axis"] == "y" and out["prepared"]["up_axis_source"] == "given"
    # load_points can do the rotation instead; prepare reads that from the meta and does not repeat it
    rotated = load_points(tmp_path / "shape_yup.npy", up_axis="y")
    out2 = prepare(rotated, Z_UP, num_points=300)
    assert np.array_equal(out2["xyz"], want) and out2["prepared"]["up_axis_source"] == "load_points"
    with pytest.raises(ValueError, match=r"shape_yup\.npy.*rotate it twice"):
        prepare(rotated, Z_UP, up_axis="y")
    # nothing said: z-up assumed, and the record says so
    assert prepare(loaded, Z_UP)["prepared"]["up_axis_source"] == "assumed"


def test_gravity_axis_of_the_contract():
    z_up = _cloud()
    out = prepare({"xyz": z_up}, {"gravity_axis": "y"})
    assert np.ptp(out["xyz"], 0).argmax() == 1  # a y-up model sees the tall axis on y
    back = rotate_axis(out["xyz"], "y", "z")
    assert np.allclose(back, prepare({"xyz": z_up}, {"gravity_axis": "z"})["xyz"], atol=1e-6)


def test_colour_modes(tmp_path):
    xyz = _cloud(200)
    rgb01 = np.random.default_rng(1).random((200, 3)).astype(np.float32)
    with_rgb = {"xyz": xyz, "rgb": rgb01}
    none = prepare(with_rgb, {"color": "none"})
    assert np.all(none["rgb"] == MISSING_COLOR) and none["prepared"]["rgb"].startswith("dropped")
    assert np.array_equal(prepare(with_rgb, {"color": "rgb01"})["rgb"], rgb01)
    assert np.allclose(prepare(with_rgb, {"color": "rgb255"})["rgb"], rgb01 * 255, atol=1e-4)
    # 0-255 colours from elsewhere are recognised; load_points' colours are [0, 1] already
    assert np.allclose(prepare({"xyz": xyz, "rgb": rgb01 * 255}, {"color": "rgb01"})["rgb"], rgb01, atol=1e-6)
    # no colour in the file: the missing-colour constant in the contract's scale
    bare = {"xyz": xyz}
    assert np.all(prepare(bare, {"color": "rgb01"})["rgb"] == np.float32(MISSING_COLOR))
    assert np.all(prepare(bare, {"color": "rgb255"})["rgb"] == np.float32(MISSING_COLOR * 255))
    assert prepare(bare, {})["rgb"] is None  # colour mode unknown: left to the batch (MISSING_COLOR)
    # colours follow their points through resampling
    out = prepare(with_rgb, {"color": "rgb01", "num_points": 50}, seed=4)
    idx = [int(np.flatnonzero((rgb01 == c).all(1))[0]) for c in out["rgb"]]
    assert np.array_equal(out["xyz"], _reference(xyz[idx], None))
    with pytest.raises(ValueError, match="contract color"):
        prepare(with_rgb, {"color": "rgb65535"})


def test_normals_per_contract(tmp_path):
    xyz = _cloud(100)
    nrm = np.tile(np.float32([[0, 1, 0]]), (100, 1))
    s = {"xyz": xyz, "normals": nrm}
    kept = prepare(s, {"normals": True}, up_axis="y")
    assert np.array_equal(kept["normals"], np.tile(np.float32([[0, 0, 1]]), (100, 1)))  # rotated with xyz
    assert prepare(s, {"normals": False})["normals"] is None
    assert prepare(s, {})["normals"] is not None  # unknown: kept
    np.save(tmp_path / "bare.npy", xyz)
    with pytest.raises(ValueError, match=r"bare\.npy: the model expects normals"):
        prepare(load_points(tmp_path / "bare.npy"), {"normals": True})


def test_contract_forms_agree():
    from svl.models import Contract

    xyz = _cloud(300)
    fields = {"gravity_axis": "z", "color": "rgb01", "num_points": 128, "normals": False}
    outs = [
        prepare({"xyz": xyz}, c)
        for c in (Contract(**fields), fields, SimpleNamespace(**fields), Contract.from_dict(fields))
    ]
    for o in outs[1:]:
        assert np.array_equal(o["xyz"], outs[0]["xyz"]) and np.array_equal(o["rgb"], outs[0]["rgb"])
    none = prepare({"xyz": xyz}, None)  # no contract: z-up, all points, colour left as it is
    assert none["xyz"].shape == (300, 3) and none["rgb"] is None


def test_degenerate_cloud_warns_with_the_file_name():
    flat = np.repeat(np.float32([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]), 20, axis=0)
    with pytest.warns(DegenerateCloudWarning, match=r"scan_07\.ply: degenerate cloud, only 5 distinct"):
        out = prepare({"xyz": flat}, Z_UP, where="scan_07.ply")
    assert out["prepared"]["distinct_points"] == 5
    assert issubclass(DegenerateCloudWarning, UserWarning)
    with pytest.warns(DegenerateCloudWarning, match="1 distinct"):
        prepare({"xyz": np.ones((30, 3), np.float32), "meta": {"path": "one.xyz"}}, Z_UP)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare({"xyz": _cloud(8)}, Z_UP)  # 8 distinct points is enough


def test_bad_input_names_the_file():
    with pytest.raises(ValueError, match=r"cloud\.npy: .*NaN"):
        prepare({"xyz": np.full((5, 3), np.nan, np.float32)}, Z_UP, where="cloud.npy")
    with pytest.raises(ValueError, match=r"cloud\.npy: .*\(N, 3\)"):
        prepare({"xyz": np.zeros((5, 2), np.float32)}, Z_UP, where="cloud.npy")
    with pytest.raises(ValueError, match=r"cloud\.npy: up_axis"):
        prepare({"xyz": _cloud()}, Z_UP, up_axis="w", where="cloud.npy")


def test_raw_units_do_not_change_the_prepared_cloud(shared_data):
    """A real ModelNet40 cloud in millimetres and shifted prepares to the cloud it was."""
    raw = build_dataset("modelnet40", "test", root=shared_data, transforms=[])[123]
    xyz = raw["xyz"]
    assert xyz.shape == (1024, 3)
    moved = xyz.astype(np.float64) * 1000.0 + [250.0, -4000.0, 1234.5]
    a = prepare({"xyz": xyz}, Z_UP, num_points=512, seed=1)
    b = prepare({"xyz": moved.astype(np.float32)}, Z_UP, num_points=512, seed=1)
    np.testing.assert_allclose(b["xyz"], a["xyz"], atol=2e-5)
    assert b["prepared"]["scale"] == pytest.approx(1000 * a["prepared"]["scale"], rel=1e-4)
    assert np.allclose(
        b["prepared"]["center"], np.asarray(a["prepared"]["center"]) * 1000 + [250, -4000, 1234.5]
    )


def test_prepare_is_a_dataset_transform(shared_data):
    from svl.data import build_dataset, collate_points

    contract = {"gravity_axis": "z", "color": "none", "num_points": 512}
    ds = build_dataset(
        "modelnet40", "test", root=shared_data, transforms=[{"name": "prepare", "contract": contract}]
    )
    a, b = ds[3], ds[3]
    assert a["xyz"].shape == (512, 3) and np.array_equal(a["xyz"], b["xyz"])  # seeded per index
    assert np.linalg.norm(a["xyz"], axis=1).max() == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(a["xyz"].mean(0), 0.0, atol=1e-5)
    assert a["prepared"]["num_points"] == 512 and a["prepared"]["up_axis"] == "z"
    batch = collate_points([ds[i] for i in range(4)])
    assert batch.xyz.shape == (4, 512, 3) and bool((batch.feats[..., 3:] == 0.4).all())
