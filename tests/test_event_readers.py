"""Event-file readers (svl.data.readers.events): N-MNIST against tonic's reader on real recordings,
.bin sniffing against real KITTI scans, format dispatch, bad input, tonic interop and the CLI.

Why: event files come from many tools with small layout differences (polarity encodings, int widths,
headers); each check below pins one way a reader could silently read garbage.
"""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pytest
from PIL import Image

from svl.data.readers import load_points
from svl.data.readers.events import (
    EVENT_DTYPE,
    TONIC_DTYPE,
    EventFile,
    UnsortedEventsWarning,
    detect_event_format,
    from_tonic,
    read_event_array,
    read_events,
    read_nmnist,
    sniff_bin,
    to_tonic,
    write_aedat31,
    write_nmnist,
)

NMNIST_SAMPLES = ("1", "2", "500", "1000", "60001", "60100")


@pytest.fixture(scope="session")
def nmnist_dir(shared_data):
    d = shared_data / "events" / "nmnist_small"
    if not d.is_dir():
        pytest.skip(f"{d}: N-MNIST samples not found")
    return d


@pytest.fixture(scope="session")
def kitti_scans(shared_data):
    files = sorted((shared_data / "kitti_samples" / "training" / "velodyne").glob("*.bin"))
    if not files:
        pytest.skip("KITTI samples not found")
    return files


def _events(n, rng, w=34, h=34, t_max=300_000):
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, w, n), rng.integers(0, h, n)
    ev["t"], ev["p"] = np.sort(rng.integers(0, t_max, n)), rng.integers(0, 2, n)
    return ev


# ----------------------------------------------------------------------------- N-MNIST
def test_read_nmnist_matches_tonic_on_real_recordings(nmnist_dir):
    tonic = pytest.importorskip("tonic")
    for name in NMNIST_SAMPLES:
        f = nmnist_dir / f"{name}.bs2"
        got = read_nmnist(f)
        ref = tonic.io.read_mnist_file(str(f), dtype=tonic.datasets.NMNIST.dtype)
        assert got.dtype == EVENT_DTYPE and 1000 < len(got) == len(ref)
        for k in "xytp":
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{name}: field {k}")
        assert np.all(np.diff(got["t"]) >= 0)
        np.testing.assert_array_equal(to_tonic(got), ref.astype(TONIC_DTYPE))


def test_nmnist_layout_byte_by_byte(tmp_path):
    """x, y, polarity in bit 7 of byte 2, 23-bit big-endian time; y == 240 marks a 2**13 us overflow."""
    recs = [
        (3, 4, 0x80 | 0x01, 0x02, 0x03),  # ON, t = 0x010203
        (33, 0, 0x00, 0x10, 0x00),  # OFF, t = 0x001000
        (0, 240, 0, 0, 0),  # overflow marker: dropped, later events + 8192 us
        (7, 33, 0x7F, 0xFF, 0xFF),  # OFF, t = 2**23 - 1 (+ 8192)
    ]
    f = tmp_path / "hand.bs2"
    f.write_bytes(bytes(b for r in recs for b in r))
    with pytest.warns(UnsortedEventsWarning, match="hand.bs2"):  # 0x010203 > 0x001000: sorted
        ev = read_nmnist(f)
    assert ev["x"].tolist() == [33, 3, 7] and ev["y"].tolist() == [0, 4, 33]
    assert ev["t"].tolist() == [0x1000, 0x010203, (1 << 23) - 1 + 8192]
    assert ev["p"].tolist() == [False, True, False]
    out = tmp_path / "rt.bin"
    ref = _events(500, np.random.default_rng(0))
    write_nmnist(out, ref)
    assert out.stat().st_size == 5 * 500
    np.testing.assert_array_equal(read_nmnist(out), ref)


# ----------------------------------------------------------------------------- .bin: N-MNIST or KITTI
def test_sniff_bin_tells_real_nmnist_from_real_kitti(tmp_path, nmnist_dir, kitti_scans):
    for scan in kitti_scans:
        assert sniff_bin(scan) == "kitti"
        assert detect_event_format(scan) is None
    for name in NMNIST_SAMPLES:
        f = tmp_path / f"{name}.bin"
        shutil.copy(nmnist_dir / f"{name}.bs2", f)
        assert sniff_bin(f) == "nmnist"
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 80 * 80])  # a multiple of both record sizes: content decides
        assert sniff_bin(f) == "nmnist"
    cut = tmp_path / "kitti80.bin"
    data = kitti_scans[0].read_bytes()
    cut.write_bytes(data[: len(data) // 80 * 80])
    assert sniff_bin(cut) == "kitti"


def test_sniff_bin_rejects_what_fits_neither(tmp_path):
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.bin.*0 bytes"):
        sniff_bin(empty)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(bytes(range(17)))
    with pytest.raises(
        ValueError, match=r"odd\.bin.*17 bytes.*nmnist: .*multiple of the 5-byte.*kitti: .*16-byte"
    ):
        sniff_bin(odd)
    noise = tmp_path / "noise.bin"  # 80 bytes: both sizes fit, neither content does
    vals = np.array([[1e30, -1e30, 5e29, 3.0]] * 5, "<f4")
    vals[:, 3] = [7e5, 1.0, 2e9, 0.5, 9e7]
    noise.write_bytes(vals.tobytes())
    with pytest.raises(
        ValueError, match=r"noise\.bin.*nmnist: timestamps are not in time order.*kitti: .*200 m"
    ):
        sniff_bin(noise)


def test_kitti_reader_on_real_scans(kitti_scans, tmp_path):
    scan = kitti_scans[0]
    raw = np.fromfile(scan, "<f4").reshape(-1, 4)
    s = load_points(scan)
    np.testing.assert_array_equal(s["xyz"], raw[:, :3])
    np.testing.assert_array_equal(s["meta"]["reflectance"], raw[:, 3])
    assert s["meta"]["format"] == "kitti" and s["meta"]["reflectance_range"] == "0-1"
    sub = load_points(scan, 500, seed=3)  # the subset keeps each point's own reflectance
    lookup = {row[:3].tobytes(): row[3] for row in raw}
    assert sub["meta"]["reflectance"].shape == (500,)
    assert all(lookup[p.tobytes()] == r for p, r in zip(sub["xyz"], sub["meta"]["reflectance"]))
    bad = tmp_path / "cut.bin"
    bad.write_bytes(scan.read_bytes()[:-7])  # neither 16- nor 5-byte records
    with pytest.raises(ValueError, match=rf"cut\.bin.*{len(scan.read_bytes()) - 7} bytes"):
        load_points(bad)


def test_load_points_on_nmnist_bin_points_to_the_event_reader(tmp_path, nmnist_dir):
    f = tmp_path / "digit.bin"
    shutil.copy(nmnist_dir / "1.bs2", f)
    with pytest.raises(ValueError, match=r"digit\.bin.*N-MNIST event.*read_events.*--format nmnist"):
        load_points(f)
    ef = read_events(f)
    assert ef.format == "nmnist" and ef.sensor_size == (34, 34) and ef.sensor_size_from == "format"


# ----------------------------------------------------------------------------- read_events
def test_read_events_dispatch_and_sensor_size(tmp_path, nmnist_dir, kitti_scans):
    ef = read_events(nmnist_dir / "60001.bs2")
    assert isinstance(ef, EventFile) and ef.format == "nmnist" and ef.tonic_sensor_size == (34, 34, 2)
    assert ef.path == nmnist_dir / "60001.bs2" and len(ef.events) > 1000
    with pytest.raises(ValueError, match=r"000000\.bin.*not an event file.*KITTI"):
        read_events(kitti_scans[0])

    ev = _events(300, np.random.default_rng(1), 128, 128)
    write_aedat31(tmp_path / "g.aedat", ev)
    a = read_events(tmp_path / "g.aedat")
    assert (a.format, a.sensor_size, a.sensor_size_from) == ("aedat", (128, 128), "header")
    np.testing.assert_array_equal(a.events, ev)

    small = _events(50, np.random.default_rng(2), 20, 10)
    np.save(tmp_path / "e.npy", small)
    n = read_events(tmp_path / "e.npy")
    assert n.format == "npy" and n.sensor_size_from == "data"
    assert n.sensor_size == (int(small["x"].max()) + 1, int(small["y"].max()) + 1)
    np.savez(tmp_path / "e.npz", events=small, sensor_size=np.array([64, 48, 2]))
    z = read_events(tmp_path / "e.npz")
    assert (z.format, z.sensor_size, z.sensor_size_from) == ("npz", (64, 48), "header")
    assert read_events(tmp_path / "e.npy", sensor_size=(100, 100)).sensor_size == (100, 100)
    np.save(tmp_path / "cloud.npy", np.zeros((10, 3), np.float32))
    assert detect_event_format(tmp_path / "cloud.npy") is None  # a point cloud, not events


def test_forced_format_errors_name_the_format_and_why(tmp_path, nmnist_dir, kitti_scans):
    with pytest.raises(
        ValueError, match=r"000000\.bin: format 'nmnist' \(forced\) does not fit: .*multiple of"
    ):
        read_events(kitti_scans[0], format="nmnist")
    f = tmp_path / "d.bin"
    shutil.copy(nmnist_dir / "2.bs2", f)
    with pytest.raises(ValueError, match=r"d\.bin: format 'kitti' \(forced\) does not fit: .*N-MNIST"):
        load_points(f, format="kitti")
    with pytest.raises(ValueError, match=r"format 'aedat' \(forced\).*AER-DAT"):
        read_events(f, format="aedat")
    with pytest.raises(ValueError, match="unknown event format 'mp4'.*nmnist"):
        read_events(f, format="mp4")
    assert read_events(f, format="nmnist").format == "nmnist"
    renamed = tmp_path / "scan.dat"
    shutil.copy(kitti_scans[1], renamed)
    assert load_points(renamed, format="kitti")["meta"]["format"] == "kitti"


# ----------------------------------------------------------------------------- bad input
def test_empty_and_truncated_files(tmp_path, nmnist_dir):
    empty = tmp_path / "empty.bs2"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.bs2.*0 bytes"):
        read_events(empty)
    data = (nmnist_dir / "1.bs2").read_bytes()
    cut = tmp_path / "cut.bs2"
    cut.write_bytes(data[:-2])
    with pytest.raises(ValueError, match=rf"cut\.bs2.*{len(data) - 2} bytes.*multiple of the 5-byte"):
        read_events(cut)


def test_out_of_order_timestamps_are_sorted_with_a_warning(tmp_path):
    ev = _events(200, np.random.default_rng(3))
    shuffled = ev.copy()
    shuffled[50:60] = shuffled[50:60][::-1]
    f = tmp_path / "shuffled.bs2"
    write_nmnist(f, shuffled)
    with pytest.warns(UnsortedEventsWarning, match=r"shuffled\.bs2.*backwards"):
        got = read_events(f).events
    assert np.all(np.diff(got["t"]) >= 0)
    np.testing.assert_array_equal(np.sort(got, order=["t", "x", "y"]), np.sort(ev, order=["t", "x", "y"]))


def test_coordinates_outside_the_sensor(tmp_path):
    ev = _events(100, np.random.default_rng(4), w=40, h=30)
    ev["x"][0] = 39
    f = tmp_path / "wide.bs2"
    write_nmnist(f, ev)
    with pytest.raises(
        ValueError, match=r"wide\.bs2.*outside the 34x34 sensor: x in \[\d+, 39\], y in \[\d+, \d+\]"
    ):
        read_events(f)
    assert read_events(f, sensor_size=(40, 30)).sensor_size == (40, 30)  # e.g. N-Caltech101's layout
    with pytest.raises(ValueError, match="neg.*negative pixel"):
        from_tonic(np.array([(-1, 0, 0, 1)], TONIC_DTYPE), name="neg")


def test_polarity_encodings(tmp_path):
    base = _events(20, np.random.default_rng(5))
    for enc, on in ((np.bool_, True), (np.uint8, 1), (np.int8, 1), (np.float32, 1.0)):
        arr = np.zeros(20, [("x", "<u2"), ("y", "<u2"), ("t", "<u8"), ("p", enc)])
        for k in "xyt":
            arr[k] = base[k]
        arr["p"] = np.where(base["p"], on, 0)
        np.testing.assert_array_equal(from_tonic(arr), base)
    pm = to_tonic(base)
    pm["p"] = np.where(base["p"], 1, -1)  # {-1, 1}: -1 is OFF
    np.testing.assert_array_equal(from_tonic(pm)["p"], base["p"])
    bad = to_tonic(base)
    bad["p"][:3] = [2, 2, 3]
    with pytest.raises(ValueError, match=r"my events: unknown polarity encoding: values \[0, 1, 2, 3\]"):
        from_tonic(bad, name="my events")
    np.save(tmp_path / "pol.npy", bad)
    with pytest.raises(ValueError, match=r"pol\.npy: unknown polarity encoding"):
        read_event_array(tmp_path / "pol.npy")
    mixed = to_tonic(base)
    mixed["p"][:2] = [-1, 0]  # {-1, 0, 1}: neither encoding
    with pytest.raises(ValueError, match="unknown polarity"):
        from_tonic(mixed)


def test_foreign_columns_are_checked():
    arr = np.zeros(3, [("x", "<f8"), ("y", "<i8"), ("t", "<f8"), ("p", "<i8")])
    arr["t"] = [0, 1.5, 2]
    with pytest.raises(ValueError, match="t holds non-integer"):
        from_tonic(arr)
    arr["t"], arr["x"] = [0, 1, 2], [0, 40000, 1]
    with pytest.raises(ValueError, match="x coordinates up to 40000 do not fit int16"):
        from_tonic(arr)
    assert len(from_tonic(np.zeros(0, TONIC_DTYPE))) == 0  # an empty tonic output stays empty
    with pytest.raises(ValueError, match="fields x, y, t, p"):
        from_tonic(np.zeros(3, [("a", "<i8")]))


# ----------------------------------------------------------------------------- tonic interop
def test_tonic_transforms_run_on_svl_arrays_and_come_back(nmnist_dir):
    tonic = pytest.importorskip("tonic")
    T = tonic.transforms
    f = nmnist_dir / "500.bs2"
    ef = read_events(f)
    ref = tonic.io.read_mnist_file(str(f), dtype=tonic.datasets.NMNIST.dtype)

    frames = T.ToFrame(sensor_size=ef.tonic_sensor_size, n_time_bins=5)(ef.events)
    np.testing.assert_array_equal(frames, T.ToFrame(sensor_size=(34, 34, 2), n_time_bins=5)(ref))
    assert frames.shape == (5, 2, 34, 34) and frames.sum() >= len(ef.events) - 1

    den_svl = from_tonic(T.Denoise(filter_time=10_000)(ef.events), sensor_size=ef.tonic_sensor_size)
    den_ref = from_tonic(T.Denoise(filter_time=10_000)(ref))
    assert 0 < len(den_svl) < len(ef.events) and den_svl.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(den_svl, den_ref)

    small = T.Downsample(spatial_factor=0.5)(to_tonic(ef.events))
    back = from_tonic(small, "downsampled", sensor_size=(17, 17, 2))
    assert back.dtype == EVENT_DTYPE and int(back["x"].max()) <= 16
    np.testing.assert_array_equal(back["x"], ef.events["x"] // 2)
    with pytest.raises(ValueError, match=r"downsampled: events outside the 8x8 sensor"):
        from_tonic(small, "downsampled", sensor_size=(8, 8))


# ----------------------------------------------------------------------------- optional formats
def test_prophesee_roundtrip_through_expelliarmus(tmp_path):
    exp = pytest.importorskip("expelliarmus")
    ev = _events(400, np.random.default_rng(6), 640, 480)
    ev["t"] = np.cumsum(np.random.default_rng(7).integers(0, 1000, len(ev)))  # expelliarmus' EVT3
    # encoder mis-codes gaps of 4096 us and more (its own limit), so keep them small
    arr = np.zeros(len(ev), [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
    for k in "txyp":
        arr[k] = ev[k]
    for enc, name in (("DAT", "r.dat"), ("EVT2", "r2.raw"), ("EVT3", "r3.raw")):
        exp.Wizard(encoding=enc).save(tmp_path / name, arr)
        got = read_events(tmp_path / name)
        assert got.format == "prophesee"
        np.testing.assert_array_equal(got.events, ev, err_msg=enc)
    dat = tmp_path / "r.dat"
    dat.write_bytes(b"% Width 640\n% Height 480\n" + dat.read_bytes())
    got = read_events(dat)
    assert (got.sensor_size, got.sensor_size_from) == ((640, 480), "header")
    noenc = tmp_path / "x.raw"
    noenc.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"x\.raw.*'% evt'"):
        read_events(noenc)


class _FakeDecoder:
    """The aedat package's Decoder interface (id_to_stream + packet iterator), on given packets."""

    packets: list = []

    def __init__(self, path):
        self.path = path

    def id_to_stream(self):
        return {
            0: {"type": "frame", "width": 346, "height": 260},
            1: {"type": "events", "width": 346, "height": 260},
        }

    def __iter__(self):
        return iter(self.packets)


def test_aedat4_through_the_aedat_interface(tmp_path, monkeypatch):
    dt = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])
    a, b = np.zeros(3, dt), np.zeros(2, dt)
    a["t"], a["x"], a["y"], a["on"] = [10, 20, 30], [1, 345, 2], [0, 259, 5], [True, False, True]
    b["t"], b["x"], b["y"], b["on"] = [25, 40], [3, 4], [6, 7], [False, True]  # 25 < 30: sorted, warned
    _FakeDecoder.packets = [
        {"stream_id": 1, "events": a},
        {"stream_id": 0, "frame": {}},
        {"stream_id": 1, "events": b},
    ]
    monkeypatch.setitem(sys.modules, "aedat", types.SimpleNamespace(Decoder=_FakeDecoder))
    f = tmp_path / "rec.aedat4"
    f.write_bytes(b"#!AER-DAT4.0\r\n")
    with pytest.warns(UnsortedEventsWarning, match=r"rec\.aedat4"):
        ef = read_events(f)
    assert (ef.format, ef.sensor_size, ef.sensor_size_from) == ("aedat4", (346, 260), "header")
    assert ef.events["t"].tolist() == [10, 20, 25, 30, 40]
    assert ef.events["x"].tolist() == [1, 345, 3, 2, 4] and ef.events["p"].tolist() == [1, 0, 0, 1, 1]


def test_aedat4_missing_package_and_bad_file(tmp_path, monkeypatch):
    f = tmp_path / "bad.aedat4"
    f.write_bytes(b"#!AER-DAT4.0\r\n" + bytes(range(100)))
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "aedat", None)  # import aedat -> ImportError
        with pytest.raises(ImportError, match=r"'aedat' package: pip install aedat"):
            read_events(f)
    pytest.importorskip("aedat")
    with pytest.raises(ValueError, match=r"bad\.aedat4: corrupt AEDAT4 file"):
        read_events(f)


# ----------------------------------------------------------------------------- svl data info / render
def test_cli_info_and_render_on_a_real_nmnist_file(tmp_path, run_cli, nmnist_dir, kitti_scans):
    f = nmnist_dir / "1.bs2"
    code, out, _ = run_cli("data", "info", f, "--json")
    assert code == 0
    info = json.loads(out)
    ref = read_nmnist(f)
    assert info["kind"] == "events" and info["format"] == "nmnist" and info["num_events"] == len(ref)
    assert info["sensor_size"] == [34, 34] and info["x_range"][1] <= 33
    assert info["duration_ms"] == pytest.approx((ref["t"][-1] - ref["t"][0]) / 1e3)
    assert info["on_fraction"] == pytest.approx(ref["p"].mean(), abs=1e-4)
    assert info["event_rate_per_s"] == pytest.approx(len(ref) / (info["duration_ms"] / 1e3), rel=1e-3)
    code, out, _ = run_cli("data", "info", f)
    assert code == 0 and "num_events:" in out and "duration_ms:" in out and "on_fraction:" in out

    png = tmp_path / "ev.png"
    code, out, _ = run_cli("data", "render", f, "-o", png)
    assert code == 0 and "ev.png" in out
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] >= 300 and img.shape[1] >= 600 and img.std() > 5
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no temp file left behind
    red = (img[..., 0] > 150) & (img[..., 2] < 100)
    blue = (img[..., 2] > 150) & (img[..., 0] < 100)
    assert red.sum() > 50 and blue.sum() > 50  # both polarities drawn

    code, out, _ = run_cli("data", "info", kitti_scans[0], "--json")
    assert code == 0 and json.loads(out)["format"] == "kitti"
    assert json.loads(out)["reflectance"]["max"] <= 1.0
    code, _, err = run_cli("data", "info", kitti_scans[0], "--format", "nmnist")
    assert code == 2 and "000000.bin" in err and "'nmnist' (forced)" in err
    copy = tmp_path / "digit.bin"
    shutil.copy(f, copy)
    code, out, _ = run_cli("data", "info", copy, "--format", "nmnist", "--json")
    assert code == 0 and json.loads(out)["num_events"] == len(ref)


def test_cli_render_of_an_event_dataset_sample_draws_its_stream(tmp_path, run_cli, nmnist_dir):
    png = tmp_path / "s.png"
    code, out, err = run_cli("data", "render", "nmnist:test", "--index", "3", "--root", nmnist_dir, "-o", png)
    assert code == 0, err
    assert "nmnist:test[3] 0" in out  # test100.txt: sample 60004 is a 0
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[1] >= 600 and ((img[..., 0] > 150) & (img[..., 2] < 100)).sum() > 50
