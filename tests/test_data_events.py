"""AEDAT 3.1 parsing against a byte-exact hand-built file, tonic as a second reference, windowing."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from svl.data import build_dataset
from svl.data.events import (
    EVENT_DTYPE,
    events_to_points,
    events_to_steps,
    read_aedat31,
    read_dvs_gesture_labels,
    read_event_array,
    slice_by_count,
    slice_by_time,
    write_aedat31,
)  # fmt: skip


def _packet(etype, events, overflow=0, size=8):
    """28-byte header + payload, spelled out field by field from the AEDAT 3.1 spec."""
    head = struct.pack("<hhiiiiii", etype, 1, size, 4, overflow, len(events), len(events), len(events))
    return head + b"".join(events)


def _pol(x, y, p, ts, valid=1):
    return struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, ts)


def test_aedat31_byte_exact(tmp_path):
    header = (
        b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#Start-Time: 2017-01-01\r\n#!END-HEADER\r\n"
    )
    body = _packet(1, [_pol(127, 0, 1, 10), _pol(5, 127, 0, 20), _pol(3, 4, 1, 25, valid=0)])
    body += _packet(2, [b"\x01" * 12, b"\x02" * 12], size=12)  # a special-event packet: skipped
    body += _packet(1, [_pol(64, 32, 0, 5)], overflow=1)  # timestamp 2**31 + 5
    f = tmp_path / "rec.aedat"
    f.write_bytes(header + body)
    ev = read_aedat31(f)
    assert ev.dtype == EVENT_DTYPE
    assert ev["x"].tolist() == [127, 5, 64] and ev["y"].tolist() == [0, 127, 32]
    assert ev["p"].tolist() == [True, False, False]
    assert ev["t"].tolist() == [10, 20, 2**31 + 5]
    assert len(read_aedat31(f, keep_invalid=True)) == 4


def test_aedat31_matches_tonic_and_roundtrips(tmp_path):
    tio = pytest.importorskip("tonic.io")
    rng = np.random.default_rng(0)
    n = 5000
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, 128, n), rng.integers(0, 128, n)
    ev["t"], ev["p"] = np.sort(rng.integers(0, 10**6, n)), rng.integers(0, 2, n)
    f = tmp_path / "r.aedat"
    write_aedat31(f, ev, packet_size=777)
    got = read_aedat31(f)
    np.testing.assert_array_equal(got, ev)
    version, start, _ = tio.read_aedat_header_from_file(str(f))
    ref = tio.get_aer_events_from_file(str(f), version, start)
    assert np.array_equal((ref["address"] >> 17) & 0x1FFF, got["x"])
    assert np.array_equal((ref["address"] >> 2) & 0x1FFF, got["y"])
    assert np.array_equal(ref["timeStamp"].astype(np.int64), got["t"])


def test_labels_csv_and_bad_rows(tmp_path):
    f = tmp_path / "u_labels.csv"
    f.write_text("class,startTime_usec,endTime_usec\n1,100,200\n11,300,400\n")
    assert read_dvs_gesture_labels(f) == [(0, 100, 200), (10, 300, 400)]
    f.write_text("class,startTime_usec,endTime_usec\n12,100,200\n")
    with pytest.raises(ValueError, match="u_labels.csv"):
        read_dvs_gesture_labels(f)


def test_event_arrays_npy_npz(tmp_path):
    ev = np.zeros(10, EVENT_DTYPE)
    ev["t"] = np.arange(10)[::-1]
    np.save(tmp_path / "e.npy", ev)
    got = read_event_array(tmp_path / "e.npy")
    assert np.all(np.diff(got["t"]) >= 0)
    np.savez(tmp_path / "c.npz", x=ev["x"], y=ev["y"], t=ev["t"], p=ev["p"])
    assert len(read_event_array(tmp_path / "c.npz")) == 10
    np.save(tmp_path / "bad.npy", np.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"bad\.npy.*x, y, t, p"):
        read_event_array(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="extension"):
        read_event_array((tmp_path / "e.txt").resolve()) if (tmp_path / "e.txt").write_text("x") else None


def test_slicing_points_and_binning():
    ev = np.zeros(1000, EVENT_DTYPE)
    ev["t"] = np.arange(1000) * 10  # 0..9990 us
    ev["x"], ev["y"], ev["p"] = np.arange(1000) % 128, 127, np.arange(1000) % 2
    wins = slice_by_time(ev, 2500)
    assert [len(w) for w in wins] == [250, 250, 250, 250]
    assert sum(len(w) for w in slice_by_time(ev, 3000, overlap_us=1000)) > 1000
    assert [len(w) for w in slice_by_count(ev, 300)] == [300, 300, 300]
    assert [len(w) for w in slice_by_count(ev, 300, drop_last=False)] == [300, 300, 300, 100]
    pts = events_to_points(wins[1])
    z = pts["xyz"][:, 2]
    assert z.min() == 0 and z.max() == 1 and np.all(np.diff(z) >= 0)
    np.testing.assert_allclose(z, (wins[1]["t"] - 2500) / (2490), rtol=1e-6)
    assert np.all(pts["xyz"][:, 1] == 1.0) and pts["feats"].shape == (250, 4)
    np.testing.assert_array_equal(pts["feats"][:, 3], wins[1]["p"])
    enc = events_to_steps(ev, T=4)
    steps, mask = enc["steps"], enc["step_mask"]
    assert steps.shape == (4, 1000, 4) and mask.shape == (4, 1000)
    np.testing.assert_array_equal(mask.sum(0), 1)  # every event in exactly one step
    # the window is 0..9990 us: quarters of 2497.5 us, so events k*250 .. k*250+249 are step k
    np.testing.assert_array_equal(mask.argmax(0), np.arange(1000) // 250)
    for k in range(4):  # an event's features sit at its own step, zeros elsewhere
        np.testing.assert_array_equal(steps[k][mask[k]], enc["feats"][mask[k]])
        assert not steps[k][~mask[k]].any()
    # z is the time within the bin: the same phase in every bin gives the same z
    z = enc["xyz"][:, 2]
    phase = ev["t"] / 9990 * 4
    np.testing.assert_allclose(z, phase - np.minimum(np.floor(phase), 3), atol=1e-6)  # the last event: 1
    assert 0 <= z.min() and z.max() <= 1


def test_dvs_gesture_dataset(tmp_path):
    from svl.data.batch import collate_points

    root = tmp_path / "DvsGesture"
    root.mkdir()
    rng = np.random.default_rng(0)
    for user in ("user01_led", "user02_led"):
        ev = np.zeros(4000, EVENT_DTYPE)
        ev["x"], ev["y"], ev["t"], ev["p"] = (
            rng.integers(0, 128, 4000),
            rng.integers(0, 128, 4000),
            np.arange(4000) * 100,
            1,
        )
        write_aedat31(root / f"{user}.aedat", ev)
        (root / f"{user}_labels.csv").write_text(
            "class,startTime_usec,endTime_usec\n3,0,150000\n7,200000,390000\n"
        )
    (root / "trials_to_train.txt").write_text("user01_led.aedat\nuser02_led.aedat\n")
    ds = build_dataset("dvs128_gesture", "train", root=tmp_path, num_points=256, T=2, encoding="bins")
    assert len(ds) == 4 and ds.labels().tolist() == [2, 6, 2, 6]
    b = collate_points([ds[i] for i in range(4)])
    assert b.feats.shape == (4, 256, 4) and b.extras["steps"].shape == (2, 4, 256, 4)
    assert b.extras["step_mask"].shape == (2, 4, 256) and b.labels.tolist() == [2, 6, 2, 6]
    cloud = build_dataset("dvs128_gesture", "train", root=tmp_path, num_points=256, T=2)
    assert "steps" not in cloud[0] and cloud[0]["feats"].shape == (256, 4)
    with pytest.raises(ValueError, match="encoding"):
        build_dataset("dvs128_gesture", "train", root=tmp_path, encoding="frames")
