"""load_points on small files generated here in every supported format."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from svl.data.axes import rotate_up_to_z
from svl.data.readers import load_points, lzf_decompress


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("rgb,normals", [(False, False), (True, False), (False, True), (True, True)])
def test_ply_roundtrip(tmp_path, write_ply, fmt, rgb, normals):
    s = load_points(write_ply(tmp_path / "a.ply", fmt, rgb, normals))
    np.testing.assert_allclose(s["xyz"], write_ply.xyz, rtol=1e-6)
    assert ("rgb" in s) == rgb and ("normals" in s) == normals
    if rgb:
        np.testing.assert_allclose(s["rgb"], write_ply.rgb8 / 255.0, atol=1e-6)
        assert s["meta"]["rgb_source_scale"] == "0-255"
    if normals:
        np.testing.assert_allclose(s["normals"], write_ply.normals, atol=1e-6)
    assert s["xyz"].dtype == np.float32 and s["meta"]["num_points"] == 50


def _check_cube(s, n):
    assert s["xyz"].shape == (n, 3) and s["meta"]["mesh"]
    # every sample lies on the cube surface: one coordinate at +-0.5, the others inside
    assert np.allclose(np.abs(s["xyz"]).max(1), 0.5, atol=1e-6)
    # area weighting on equal faces: each of the 6 faces gets ~1/6 of the points
    face = np.argmax(np.abs(s["xyz"]), 1) * 2 + (s["xyz"][np.arange(n), np.argmax(np.abs(s["xyz"]), 1)] > 0)
    frac = np.bincount(face, minlength=6) / n
    assert np.all(np.abs(frac - 1 / 6) < 0.02), frac
    # face normals are unit and axis-aligned
    assert np.allclose(np.abs(s["normals"]).max(1), 1, atol=1e-6)


def test_obj_off_stl_meshes(tmp_path, cube_mesh):
    CUBE_V, CUBE_QUADS = cube_mesh.v, cube_mesh.quads
    obj = tmp_path / "cube.obj"
    obj.write_text(
        "# cube\n"
        + "".join(f"v {x} {y} {z}\n" for x, y, z in CUBE_V)
        + "".join("f " + " ".join(f"{i + 1}//1" for i in q) + "\n" for q in CUBE_QUADS)
    )
    _check_cube(load_points(obj, 6000), 6000)
    off = tmp_path / "cube.off"  # ModelNet's broken first line: counts glued to 'OFF'
    off.write_text(
        f"OFF{len(CUBE_V)} {len(CUBE_QUADS)} 0\n"
        + "".join(f"{x} {y} {z}\n" for x, y, z in CUBE_V)
        + "".join(f"4 {' '.join(map(str, q))}\n" for q in CUBE_QUADS)
    )
    _check_cube(load_points(off, 6000), 6000)
    tris = np.array([[q[0], q[k], q[k + 1]] for q in CUBE_QUADS for k in (1, 2)])
    stl = tmp_path / "cube.stl"
    with open(stl, "wb") as fh:
        fh.write(b"solid-looking binary header".ljust(80, b" ") + struct.pack("<I", len(tris)))
        for t in tris:
            fh.write(struct.pack("<3f", 0, 0, 0) + CUBE_V[t].astype("<f4").tobytes() + b"\0\0")
    _check_cube(load_points(stl, 6000), 6000)
    astl = tmp_path / "cube_ascii.stl"
    astl.write_text(
        "solid cube\n"
        + "".join(
            "facet normal 0 0 0\nouter loop\n"
            + "".join(f"vertex {x} {y} {z}\n" for x, y, z in CUBE_V[t])
            + "endloop\nendfacet\n"
            for t in tris
        )
        + "endsolid cube\n"
    )
    _check_cube(load_points(astl, 6000), 6000)
    # same seed -> same samples; default count is 10k
    assert np.array_equal(load_points(obj, 100)["xyz"], load_points(obj, 100)["xyz"])
    assert load_points(obj)["xyz"].shape == (10000, 3)


def test_mesh_sampling_against_trimesh(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    mesh = trimesh.creation.icosphere(subdivisions=2)
    mesh.vertices *= np.array([1.0, 2.0, 0.5])  # unequal face areas
    path = tmp_path / "ico.obj"
    mesh.export(path)
    s = load_points(path, 20000, seed=1)
    assert s["meta"]["faces"] == len(mesh.faces) and s["meta"]["vertices"] == len(mesh.vertices)
    # flat triangles between points of the ellipsoid lie just inside it
    r = ((s["xyz"] / [1.0, 2.0, 0.5]) ** 2).sum(1)
    assert r.max() <= 1 + 1e-5 and r.min() > 0.85
    # area weighting on a 1 x 2 x 3 box: points per face axis follow trimesh's face areas
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    box.export(tmp_path / "box.stl")
    b = load_points(tmp_path / "box.stl", 30000, seed=2)
    half = np.array([0.5, 1.0, 1.5])
    axis = np.argmax(np.abs(b["xyz"]) / half, 1)
    frac = np.bincount(axis, minlength=3) / len(axis)
    ref = np.bincount(np.argmax(np.abs(box.face_normals), 1), weights=box.area_faces, minlength=3)
    np.testing.assert_allclose(frac, ref / ref.sum(), atol=0.01)
    assert np.allclose(np.abs(b["normals"][np.arange(len(axis)), axis]), 1, atol=1e-5)


def test_ply_mesh_is_sampled_and_as_mesh_false_keeps_vertices(tmp_path, write_ply, cube_mesh):
    CUBE_V, CUBE_QUADS = cube_mesh.v, cube_mesh.quads
    tris = [[q[0], q[k], q[k + 1]] for q in CUBE_QUADS for k in (1, 2)]
    p = write_ply(tmp_path / "m.ply", "binary_little_endian", faces=tris, xyz=CUBE_V.astype(np.float32))
    _check_cube(load_points(p, 3000), 3000)
    assert load_points(p, as_mesh=False)["xyz"].shape == (8, 3)
    pa = write_ply(tmp_path / "ma.ply", "ascii", faces=CUBE_QUADS, xyz=CUBE_V.astype(np.float32))
    _check_cube(load_points(pa, 3000), 3000)


def test_text_formats(tmp_path, write_ply):
    xyz, nrm, rgb8 = write_ply.xyz, write_ply.normals, write_ply.rgb8
    (tmp_path / "a.xyz").write_text("\n".join(" ".join(map(repr, r)) for r in xyz.tolist()))
    np.testing.assert_allclose(load_points(tmp_path / "a.xyz")["xyz"], xyz, rtol=1e-6)
    # 6 columns whose last triple is unit length -> normals (modelnet40_normal_resampled layout)
    rows = np.concatenate([xyz, nrm], 1)
    (tmp_path / "n.txt").write_text("\n".join(",".join(map(repr, r)) for r in rows.tolist()))
    s = load_points(tmp_path / "n.txt")
    np.testing.assert_allclose(s["normals"], nrm, atol=1e-6)
    assert "rgb" not in s
    # 6 columns with 0-255 values -> rgb; header names win
    rows = np.concatenate([xyz, rgb8.astype(np.float32)], 1)
    (tmp_path / "c.csv").write_text(
        "x,y,z,red,green,blue\n" + "\n".join(",".join(map(repr, r)) for r in rows.tolist())
    )
    s = load_points(tmp_path / "c.csv")
    np.testing.assert_allclose(s["rgb"], rgb8 / 255.0, atol=1e-6)
    # explicit columns: skip a column
    rows = np.concatenate([xyz, np.ones((50, 1)), nrm], 1)
    (tmp_path / "i.txt").write_text("\n".join(" ".join(map(repr, r)) for r in rows.tolist()))
    s = load_points(tmp_path / "i.txt", columns="xyz_nxnynz")
    np.testing.assert_allclose(s["normals"], nrm, atol=1e-6)


def test_npy_npz(tmp_path, write_ply):
    xyz, nrm, rgb8 = write_ply.xyz, write_ply.normals, write_ply.rgb8
    np.save(tmp_path / "a.npy", xyz)
    np.testing.assert_array_equal(load_points(tmp_path / "a.npy")["xyz"], xyz)
    np.save(tmp_path / "stack.npy", np.stack([xyz, xyz * 2]))
    with pytest.raises(ValueError, match="pass index"):
        load_points(tmp_path / "stack.npy")
    np.testing.assert_allclose(load_points(tmp_path / "stack.npy", index=1)["xyz"], xyz * 2)
    np.savez(tmp_path / "b.npz", points=xyz, colors=rgb8)
    s = load_points(tmp_path / "b.npz")
    np.testing.assert_allclose(s["rgb"], rgb8 / 255.0)
    np.save(tmp_path / "d.npy", np.array({"xyz": xyz, "rgb": rgb8 / 255.0}, dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_points(tmp_path / "d.npy")
    np.testing.assert_allclose(load_points(tmp_path / "d.npy", allow_pickle=True)["rgb"], rgb8 / 255.0)
    st = np.zeros(50, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f4"), ("ny", "f4"), ("nz", "f4")])
    st["x"], st["y"], st["z"] = xyz.T
    st["nx"], st["ny"], st["nz"] = nrm.T
    np.save(tmp_path / "s.npy", st)
    np.testing.assert_allclose(load_points(tmp_path / "s.npy")["normals"], nrm)


@pytest.mark.parametrize("mode", ["binary", "binary_compressed"])
def test_pcd(tmp_path, write_ply, mode, write_pcd):
    s = load_points(write_pcd(tmp_path / f"{mode}.pcd", mode, write_ply.xyz, write_ply.rgb8))
    np.testing.assert_allclose(s["xyz"], write_ply.xyz, rtol=1e-6)
    np.testing.assert_allclose(s["rgb"], write_ply.rgb8 / 255.0, atol=1e-6)


def test_pcd_ascii(tmp_path, write_ply, write_pcd):
    s = load_points(write_pcd(tmp_path / "a.pcd", "ascii", write_ply.xyz, write_ply.rgb8))
    np.testing.assert_allclose(s["xyz"], write_ply.xyz, rtol=1e-6)


def test_lzf_backreference():
    # literal "abc", then a back-reference of length 6 at distance 3 -> "abcabcabc"
    stream = bytes([2]) + b"abc" + bytes([(4 << 5) | 0, 2])
    assert lzf_decompress(stream, 9) == b"abcabcabc"
    with pytest.raises(Exception, match="before start"):
        lzf_decompress(bytes([(1 << 5), 5]), 3)


def test_up_axis_rotation(tmp_path):
    np.save(tmp_path / "a.npy", np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32))
    s = load_points(tmp_path / "a.npy", up_axis="y")
    np.testing.assert_allclose(s["xyz"][0], [0, 0, 1])  # the up vector becomes +z
    np.testing.assert_allclose(s["xyz"][1], [1, 0, 0])
    for ax in ("x", "y", "z", "-y", "-z"):
        r = rotate_up_to_z(np.eye(3, dtype=np.float32), ax)
        assert np.isclose(np.linalg.det(r), 1.0)  # proper rotation, no mirror
    with pytest.raises(ValueError, match="up_axis"):
        load_points(tmp_path / "a.npy", up_axis="w")


def test_num_points_resampling(tmp_path, write_ply):
    xyz = write_ply.xyz
    np.save(tmp_path / "a.npy", xyz)
    s = load_points(tmp_path / "a.npy", num_points=20, seed=3)
    assert s["xyz"].shape == (20, 3)
    assert {tuple(r) for r in s["xyz"].tolist()} <= {tuple(r) for r in xyz.tolist()}
    assert load_points(tmp_path / "a.npy", num_points=80)["xyz"].shape == (80, 3)


def test_bad_input_messages(tmp_path, write_ply):
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        load_points(tmp_path / "missing.ply")
    (tmp_path / "a.foo").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"a\.foo.*unknown extension"):
        load_points(tmp_path / "a.foo")
    (tmp_path / "e.xyz").write_text("# nothing\n")
    with pytest.raises(ValueError, match=r"e\.xyz.*empty"):
        load_points(tmp_path / "e.xyz")
    (tmp_path / "n.xyz").write_text("0 0 0\nnan 1 2\n")
    with pytest.raises(ValueError, match=r"n\.xyz.*NaN"):
        load_points(tmp_path / "n.xyz")
    (tmp_path / "i.xyz").write_text("0 0 0\ninf 1 2\n")
    with pytest.raises(ValueError, match="NaN or inf"):
        load_points(tmp_path / "i.xyz")
    np.save(tmp_path / "w.npy", np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"w\.npy.*2 columns"):
        load_points(tmp_path / "w.npy")
    np.save(tmp_path / "z.npy", np.zeros((0, 3)))
    with pytest.raises(ValueError, match="empty cloud"):
        load_points(tmp_path / "z.npy")
    p = write_ply(tmp_path / "t.ply", "binary_little_endian")
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"t\.ply.*truncated"):
        load_points(p)
    (tmp_path / "f.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(ValueError, match=r"f\.obj.*out of range"):
        load_points(tmp_path / "f.obj")
    (tmp_path / "d.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="zero surface area"):
        load_points(tmp_path / "d.obj")


def test_reader_table_lists_every_format():
    from svl.data.readers import list_readers

    exts = {".ply", ".obj", ".off", ".stl", ".xyz", ".txt", ".csv", ".pts", ".npy", ".npz", ".pcd", ".bin"}
    assert set(list_readers()) == exts


def test_register_reader_adds_a_format_with_one_function(tmp_path, write_ply):
    xyz = write_ply.xyz
    from svl.data.readers import READERS, BadFile, ReadOptions, register_reader

    def read_tsv3(path: Path, opts: ReadOptions) -> dict:
        rows = [ln.split("\t") for ln in path.read_text().splitlines() if ln]
        if any(len(r) != 3 for r in rows):
            raise BadFile("every row needs 3 tab-separated values")
        return {"xyz": np.asarray(rows, dtype=np.float64)}

    register_reader(".TSV3", read_tsv3, format="tsv3")
    try:
        (tmp_path / "a.tsv3").write_text("\n".join("\t".join(map(repr, r)) for r in xyz.tolist()))
        s = load_points(tmp_path / "a.tsv3", up_axis="y")
        np.testing.assert_allclose(s["xyz"], rotate_up_to_z(xyz, "y"), rtol=1e-6)
        assert s["meta"]["format"] == "tsv3" and s["meta"]["num_points"] == 50
        (tmp_path / "b.tsv3").write_text("1\t2\n")
        with pytest.raises(ValueError, match=r"b\.tsv3: every row needs 3"):
            load_points(tmp_path / "b.tsv3")
        (tmp_path / "c.tsv3").write_text("1\tx\t2\n")  # other exceptions are wrapped too
        with pytest.raises(ValueError, match=r"c\.tsv3: invalid tsv3 file"):
            load_points(tmp_path / "c.tsv3")
        with pytest.raises(ValueError, match="already registered"):
            register_reader(".tsv3", lambda p, o: {})
        # an entry point "pkg:function" registers the bare function: it works the same way
        READERS.register(".tsv4", read_tsv3)
        (tmp_path / "d.tsv4").write_text("0\t0\t1\n")
        assert load_points(tmp_path / "d.tsv4")["xyz"].tolist() == [[0.0, 0.0, 1.0]]
        (tmp_path / "e.nope").write_text("0 0 0")
        with pytest.raises(
            ValueError, match=r"e\.nope: unknown extension '\.nope'; supported: .*\.tsv3, \.tsv4"
        ):
            load_points(tmp_path / "e.nope")
    finally:
        READERS.unregister(".tsv3")
        READERS.unregister(".tsv4")


def test_reader_errors_are_value_errors_outside_load_points_too():
    from svl.data import sample_mesh_surface

    with pytest.raises(ValueError, match="zero surface area"):
        sample_mesh_surface(np.zeros((3, 3)), np.array([[0, 1, 2]]), 10)
    with pytest.raises(ValueError, match="LZF"):
        lzf_decompress(bytes([5]) + b"ab", 6)


def test_rotate_axis_between_up_conventions():
    from svl.data.axes import rotate_axis

    v = np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)
    for src in ("x", "y", "z", "-y", "-z"):
        assert np.array_equal(rotate_axis(v, src, "z"), rotate_up_to_z(v, src))
        for dst in ("x", "y", "z", "-x"):
            m = rotate_axis(np.eye(3, dtype=np.float32), src, dst)
            assert np.isclose(np.linalg.det(m), 1.0)  # proper rotation
            up = np.zeros((1, 3), np.float32)
            up[0, "xyz".index(src[-1])] = -1.0 if src.startswith("-") else 1.0
            want = np.zeros((1, 3), np.float32)
            want[0, "xyz".index(dst[-1])] = -1.0 if dst.startswith("-") else 1.0
            assert np.array_equal(rotate_axis(up, src, dst), want), (src, dst)
            assert np.array_equal(rotate_axis(rotate_axis(v, src, dst), dst, src), v)  # exact inverse
