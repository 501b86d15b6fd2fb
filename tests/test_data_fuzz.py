"""Random and truncated bytes fed to every reader must give a ValueError naming the file."""

from __future__ import annotations

import numpy as np
import pytest

from svl.data.events import EVENT_DTYPE, read_aedat31, read_event_array, write_aedat31
from svl.data.readers import load_points


# A unit cube: 8 corners and 6 quads (the mesh test_data_io.py samples).
def _valid_files(tmp, write_ply, write_pcd, cube_mesh):
    CUBE_V, CUBE_QUADS = cube_mesh.v, cube_mesh.quads
    xyz = write_ply.xyz
    files = {
        "ply_bin": write_ply(tmp / "a.ply", "binary_little_endian", rgb=True, normals=True),
        "ply_ascii": write_ply(tmp / "b.ply", "ascii", rgb=True),
        "pcd_bin": write_pcd(tmp / "a.pcd", "binary", xyz, write_ply.rgb8),
        "pcd_comp": write_pcd(tmp / "b.pcd", "binary_compressed", xyz, write_ply.rgb8),
    }
    (tmp / "c.obj").write_text(
        "".join(f"v {x} {y} {z}\n" for x, y, z in CUBE_V)
        + "".join("f " + " ".join(str(i + 1) for i in q) + "\n" for q in CUBE_QUADS)
    )
    (tmp / "c.off").write_text(
        "OFF\n8 6 0\n"
        + "".join(f"{x} {y} {z}\n" for x, y, z in CUBE_V)
        + "".join(f"4 {' '.join(map(str, q))}\n" for q in CUBE_QUADS)
    )
    (tmp / "c.xyz").write_text("\n".join(" ".join(map(repr, r)) for r in xyz.tolist()))
    np.save(tmp / "c.npy", xyz)
    np.savez(tmp / "c.npz", xyz=xyz)
    files.update(
        obj=tmp / "c.obj", off=tmp / "c.off", xyz=tmp / "c.xyz", npy=tmp / "c.npy", npz=tmp / "c.npz"
    )
    return files


def _expect_value_error(fn, path):
    try:
        fn(path)
    except ValueError as e:
        assert str(path) in str(e), f"message does not name the file: {e}"
    except Exception as e:  # pragma: no cover - the failure we are looking for
        pytest.fail(f"{path.name}: {type(e).__name__} instead of ValueError: {e}")


def test_truncated_and_random_bytes_point_readers(tmp_path, write_ply, write_pcd, cube_mesh):
    rng = np.random.default_rng(0)
    files = _valid_files(tmp_path, write_ply, write_pcd, cube_mesh)
    assert len(files) == 9
    for name, path in files.items():
        data = path.read_bytes()
        load_points(path, 64)  # the intact file reads
        bad = tmp_path / f"bad_{name}{path.suffix}"
        cuts = sorted({0, 1, 3, 10, len(data) // 3, len(data) // 2, len(data) - 20, len(data) - 1})
        for cut in cuts:
            bad.write_bytes(data[:cut])
            try:
                load_points(bad, 64)
            except ValueError as e:
                assert str(bad) in str(e)
            # a truncated text file can still be a smaller valid cloud; that is fine
        for trial in range(25):
            blob = bytearray(data)
            if trial % 2:  # flip random bytes in place
                for i in rng.integers(0, len(blob), size=8):
                    blob[i] = rng.integers(0, 256)
                bad.write_bytes(bytes(blob))
                try:
                    load_points(bad, 64)
                except ValueError as e:
                    assert str(bad) in str(e)
                except Exception as e:
                    pytest.fail(f"{name} with flipped bytes: {type(e).__name__}: {e}")
            else:  # pure noise, sometimes behind the right magic
                head = data[: int(rng.integers(0, 40))] if trial % 4 == 0 else b""
                bad.write_bytes(head + rng.bytes(int(rng.integers(0, 400))))
                _expect_value_error(lambda p: load_points(p, 64), bad)


def test_truncated_and_random_bytes_event_readers(tmp_path):
    rng = np.random.default_rng(1)
    ev = np.zeros(300, EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = (
        rng.integers(0, 128, 300),
        rng.integers(0, 128, 300),
        np.arange(300),
        1,
    )
    good = tmp_path / "g.aedat"
    write_aedat31(good, ev, packet_size=100)
    data = good.read_bytes()
    bad = tmp_path / "bad.aedat"
    for cut in (0, 5, 40, len(data) - 5, len(data) - 1000):
        bad.write_bytes(data[:cut])
        _expect_value_error(read_aedat31, bad)
    for _ in range(20):
        bad.write_bytes(data[:60] + rng.bytes(int(rng.integers(1, 300))))
        _expect_value_error(read_aedat31, bad)
    np.save(tmp_path / "e.npy", ev)
    raw = (tmp_path / "e.npy").read_bytes()
    for cut in (0, 10, 100, len(raw) - 3):
        (tmp_path / "t.npy").write_bytes(raw[:cut])
        _expect_value_error(read_event_array, tmp_path / "t.npy")
    (tmp_path / "r.npz").write_bytes(rng.bytes(500))
    _expect_value_error(read_event_array, tmp_path / "r.npz")
