"""Inputs a model was not trained for (issue 28, items 4-7): LiDAR `.bin` scans of 4, 5 or 6 float32
per point, a detector given a scan outside its range, grey and colour pictures for the other kind of
image model, and event recordings from another sensor, each through the command line (exit code,
the one line, the files left) and the readers underneath.

Why: a reader that blames "points beyond 200 m" for a nuScenes scan, a detector reporting boxes for
a scan it cannot see, and an image model refusing a grey picture stored as RGB all fail a new user
on the first real file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svl.data import load_points
from svl.data.readers._sniff import lidar_problem, lidar_width, sniff_bin
from svl.data.readers.events import EVENT_DTYPE

NAMES = ["airplane", "chair", "table"]


def _scan(
    n: int = 800, seed: int = 0, centre: tuple[float, float] = (0.0, 0.0), r: float = 20.0
) -> np.ndarray:
    """(n, 4) float32 x, y, z, reflectance of a 360-degree scan: half its x and y negative, ground below."""
    g = np.random.default_rng(seed)
    a, d = g.uniform(0, 2 * np.pi, n), g.uniform(2.0, r, n)
    xyz = np.stack([centre[0] + d * np.cos(a), centre[1] + d * np.sin(a), g.uniform(-1.8, 1.0, n)], 1)
    return np.concatenate([xyz, g.uniform(0, 1, (n, 1))], 1).astype("<f4")


def _nuscenes(scan: np.ndarray, seed: int = 1) -> np.ndarray:
    ring = np.random.default_rng(seed).integers(0, 32, (len(scan), 1))
    return np.concatenate([scan[:, :3], scan[:, 3:] * 255, ring], 1).astype("<f4")


def _waymo(scan: np.ndarray, seed: int = 2) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.concatenate(
        [scan, g.uniform(0, 1.5, (len(scan), 1)), g.integers(0, 5, (len(scan), 1))], 1
    ).astype("<f4")


# ----------------------------------------------------------------------------- item 6: record widths
def test_bin_scans_of_4_5_and_6_floats_are_read_by_their_width(tmp_path: Path) -> None:
    scan = _scan(600)  # 600 points: 2400, 3000 and 3600 floats, every width divides the other files too
    for name, arr, fmt in (("k.bin", scan, "kitti"), ("n.pcd.bin", _nuscenes(scan), "nuscenes"),
                           ("w.bin", _waymo(scan), "waymo")):  # fmt: skip
        (tmp_path / name).write_bytes(arr.tobytes())
        s = load_points(tmp_path / name)
        assert s["meta"]["format"] == fmt and np.array_equal(s["xyz"], scan[:, :3]), name
        assert np.allclose(s["meta"]["reflectance"], arr[:, 3])
        assert sniff_bin(tmp_path / name) == "kitti"  # a LiDAR scan, not N-MNIST events
        assert load_points(tmp_path / name, format=fmt)["meta"]["format"] == fmt
    # the width forced wrong: the error says what the bytes read as, not "beyond 200 m"
    with pytest.raises(ValueError, match=r"w\.bin: format 'kitti' \(forced\).*reads as a waymo scan") as e:
        load_points(tmp_path / "w.bin", format="kitti")
    assert "200 m" not in str(e.value)


def test_real_kitti_scans_read_as_4_floats_even_when_every_width_divides(shared_data: Path) -> None:
    files = sorted((shared_data / "kitti_samples" / "training" / "velodyne").glob("*.bin"))
    if not files:
        pytest.skip("KITTI samples not found")
    for f in files:
        data = f.read_bytes()
        cut = data[: len(data) // 240 * 240]  # 60 floats: a whole number of 4-, 5- and 6-float records
        assert lidar_width(data) == 4 and lidar_width(cut) == 4
        assert lidar_problem(cut, 5) is not None and lidar_problem(cut, 6) is not None


def test_an_ambiguous_or_unreadable_width_names_the_widths_tried(tmp_path: Path, run_cli) -> None:
    front = np.abs(_scan(60))  # every value positive: 4 and 6 floats per point read (5: no whole ring)
    with pytest.raises(
        ValueError,
        match=r"4 \(kitti\) and with 6 \(waymo\).*tried widths 4, 5 and 6.*--format kitti\|nuscenes",
    ):
        lidar_width(front.tobytes(), "front.bin")
    (tmp_path / "front.bin").write_bytes(front.tobytes())
    code, out, err = run_cli("data", "info", tmp_path / "front.bin")
    assert code == 2 and err.count("\n") == 1 and "front.bin" in err and "widths 4, 5 and 6" in err
    code, out, _ = run_cli("data", "info", tmp_path / "front.bin", "--format", "waymo")
    assert code == 0 and "format: waymo" in out
    bad = np.full((60, 4), -1.0, "<f4")  # negative reflectances whatever the width
    (tmp_path / "bad.bin").write_bytes(bad.tobytes())
    code, _, err = run_cli("data", "info", tmp_path / "bad.bin")
    assert code == 2 and err.count("\n") == 1
    assert all(f"{w} floats per point ({k})" in err for w, k in ((4, "kitti"), (5, "nuscenes"), (6, "waymo")))


# ----------------------------------------------------------------------------- item 4: range checks
@pytest.fixture()
def detector(tmp_path: Path) -> Path:
    """A detector trained on +-3 m scenes (untrained weights: only its range matters here)."""
    from svl.checkpoint import save_checkpoint
    from svl.models import create_model
    from svl.models.loading import DETECTOR_KIND

    cfg = {"num_classes": 1, "point_cloud_range": [-3, -3, -2, 3, 3, 1.8], "bev_stride": 4}
    net = create_model("e3dsnn_det_t", **cfg)
    meta = {"kind": DETECTOR_KIND, "model": "e3dsnn_det_t", "model_cfg": cfg, "class_names": ["object"]}
    return save_checkpoint(tmp_path / "det.safetensors", dict(net.state_dict()), meta)


def test_detect_refuses_a_scan_outside_its_range_and_warns_on_one_barely_inside(
    tmp_path: Path, detector: Path, run_cli
) -> None:
    far = _nuscenes(_scan(800, centre=(40.0, 0.0), r=20.0))  # a nuScenes-width scan 20-60 m ahead
    (tmp_path / "far.pcd.bin").write_bytes(far.tobytes())
    out = tmp_path / "out"
    code, stdout, err = run_cli("detect", "--checkpoint", detector, tmp_path / "far.pcd.bin", "-o", out)
    assert code == 2 and stdout == "" and err.count("\n") == 1, err
    assert (
        err.startswith("svl: error: ") and "far.pcd.bin: 0 of 800 points inside the detector's range" in err
    )
    assert "x [-3, 3], y [-3, 3], z [-2, 1.8] m" in err
    assert not out.exists() or not any(out.iterdir())
    few = _scan(800, r=40.0)  # 2-40 m around: a few percent within 3 m
    (tmp_path / "few.bin").write_bytes(few.tobytes())
    code, stdout, err = run_cli("detect", "--checkpoint", detector, tmp_path / "few.bin", "-o", out)
    assert code == 0, err
    [line] = err.splitlines()
    assert line.startswith("svl: warning: ") and "few.bin: only " in line and " of 800 points inside" in line
    assert (out / "few.json").is_file() and (out / "few.png").stat().st_size > 1000
    assert stdout.startswith(f"{tmp_path / 'few.bin'}: ")


def test_detect_of_many_files_counts_a_refused_scan_as_failed_and_warns_once_per_file(
    tmp_path: Path, detector: Path, run_cli
) -> None:
    """The range check inside the many-files loop: the refused scan is one error line and a failed
    file (the others go on, a count line, exit 2); a scan barely inside is one warning line."""
    (tmp_path / "a_far.bin").write_bytes(_scan(800, centre=(40.0, 0.0), r=20.0).tobytes())
    (tmp_path / "b_few.bin").write_bytes(_scan(800, r=40.0).tobytes())
    (tmp_path / "c_near.bin").write_bytes(_scan(800, seed=4, r=2.9).tobytes())
    out = tmp_path / "out"
    files = [tmp_path / n for n in ("a_far.bin", "b_few.bin", "c_near.bin")]
    code, stdout, err = run_cli("detect", "--checkpoint", detector, *files, "-o", out)
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert lines[0].startswith("svl: error: ") and "a_far.bin: 0 of 800 points inside" in lines[0]
    assert lines[1].startswith("svl: warning: ") and "b_few.bin: only " in lines[1]
    assert lines[2] == "svl: 1 of 3 files failed"
    assert [line.split(":")[0] for line in stdout.splitlines()] == [str(files[1]), str(files[2])]
    assert (
        not (out / "a_far.json").exists()
        and (out / "b_few.json").is_file()
        and (out / "c_near.json").is_file()
    )


# ----------------------------------------------------------------------------- item 5: grey and colour
def _image_model(tmp_path: Path, model_checkpoint, channels: int) -> Path:
    data = {"input": "image", "image_size": 8, "channels": channels}
    meta = {"kind": "svl-classifier", "class_names": NAMES, "data": data}
    _, ckpt = model_checkpoint(
        tmp_path / f"img{channels}.safetensors",
        "spikformer_tiny",
        meta=meta,
        out_dim=3,
        T=1,
        in_channels=channels,
    )
    return ckpt


def test_images_convert_between_grey_and_rgb_as_pil_does(tmp_path: Path, model_checkpoint, run_cli) -> None:
    from svl.data.images import ImageChannelsWarning, read_image

    g = np.random.default_rng(3)
    rgb = g.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    Image.fromarray(np.repeat(rgb[:, :, :1], 3, 2)).save(tmp_path / "greyrgb.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.png")
    with pytest.warns(ImageChannelsWarning, match="colours dropped"):
        t = read_image(tmp_path / "colour.png", channels=1, convert=True)
    want = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255  # ITU-R 601-2 luma, PIL's rounding
    np.testing.assert_array_equal(t[0].numpy(), want)
    with pytest.warns(ImageChannelsWarning, match="replicated"):
        t3 = read_image(tmp_path / "grey.png", channels=3, convert=True)
    np.testing.assert_array_equal(t3.numpy(), np.repeat(rgb[None, :, :, 0], 3, 0).astype(np.float32) / 255)

    grey_model, rgb_model = (
        _image_model(tmp_path, model_checkpoint, 1),
        _image_model(tmp_path, model_checkpoint, 3),
    )
    code, out, err = run_cli("classify", "--checkpoint", grey_model, tmp_path / "greyrgb.png")
    assert code == 0 and out.count("\n") == 1, err
    [line] = err.splitlines()
    assert line.startswith("svl: warning: ") and "greyrgb.png: RGB image" in line and "nothing lost" in line
    code, out, err = run_cli("classify", "--checkpoint", rgb_model, tmp_path / "grey.png")
    assert code == 0 and out.count("\n") == 1 and err.count("\n") == 1 and "grey.png: grayscale" in err
    # where the conversion would lose the picture: red and a grey of the same luma, side by side
    iso = np.zeros((6, 6, 3), np.uint8)
    iso[:, :3] = (255, 0, 0)
    iso[:, 3:] = (76, 76, 76)  # 255 * 299 / 1000 = 76.2 -> the same luma as pure red
    Image.fromarray(iso).save(tmp_path / "iso.png")
    code, out, err = run_cli("classify", "--checkpoint", grey_model, tmp_path / "iso.png")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("svl: error: ") and "iso.png" in err and "same luma" in err


# ----------------------------------------------------------------------------- item 7: other sensors
def _event_file(path: Path, w: int, h: int, n: int = 400, seed: int = 4) -> Path:
    g = np.random.default_rng(seed)
    ev = np.zeros(n, EVENT_DTYPE)
    ev["x"], ev["y"] = g.integers(0, w, n), g.integers(0, h, n)
    ev["x"][0], ev["y"][0] = w - 1, h - 1
    ev["t"], ev["p"] = np.sort(g.integers(0, 100_000, n)), g.integers(0, 2, n).astype(bool)
    np.save(path, ev)
    return path


def test_events_from_another_sensor_are_rescaled_and_the_size_can_be_stated(
    tmp_path: Path, model_checkpoint, run_cli
) -> None:
    data = {"input": "events", "encoding": "cloud", "num_points": 256, "sensor_size": [34, 34]}
    meta = {"kind": "svl-classifier", "class_names": NAMES, "data": data}
    _, ckpt = model_checkpoint(
        tmp_path / "ev.safetensors", "e3dsnn_t", meta=meta, out_dim=3, in_channels=4, T=1
    )
    rec = _event_file(tmp_path / "davis.npy", 300, 200)
    code, out, err = run_cli("classify", "--checkpoint", ckpt, rec)
    assert code == 0 and out.count("\n") == 1, err
    [line] = err.splitlines()
    assert (
        "davis.npy: sensor 300x200 (guessed from the largest x and y; state it with --sensor-size W H)"
        in line
    )
    assert "trained on 34x34; coordinates rescaled" in line
    code, out, err = run_cli("classify", "--checkpoint", ckpt, rec, "--sensor-size", "346", "260")
    assert code == 0 and "sensor 346x260 (as given)" in err and err.count("\n") == 1
    code, out, err = run_cli("classify", "--checkpoint", ckpt, rec, "--sensor-size", "34", "34")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "davis.npy: events outside the 34x34 sensor" in err and "--sensor-size W H" in err
    code, out, _ = run_cli("data", "info", rec, "--sensor-size", "346", "260")
    assert code == 0 and "sensor_size: [346, 260]" in out and "sensor_size_from: argument" in out
    code, _, err = run_cli("data", "render", rec, "-o", tmp_path / "r.png", "--sensor-size", "100", "100")
    assert code == 2 and "--sensor-size W H" in err and not (tmp_path / "r.png").exists()


# ----------------------------------------------------------------------------- item 4: up axis
def test_checkpoints_record_how_their_training_files_stood(shared_data: Path) -> None:
    from svl.data import build_dataset, files_up_axis
    from svl.data.base import ArrayDataset
    from svl.data.splits import Subset
    from svl.data.transforms import Compose

    ds = build_dataset("modelnet40", "test", root=shared_data / "modelnet40")  # the shared npz: z-up
    assert files_up_axis(ds) == "z" and files_up_axis(Subset(Subset(ds, np.arange(3)), np.arange(2))) == "z"
    y = ArrayDataset(np.zeros((2, 4, 3), np.float32), np.zeros(2), ["a"], "train", Compose([]), swap_yz=True)
    assert files_up_axis(Subset(y, np.arange(1))) == "y" and files_up_axis(object()) is None


def test_a_file_read_as_z_up_for_a_model_of_y_up_files_is_warned_about(
    tmp_path: Path, model_checkpoint, shared_data: Path, run_cli
) -> None:
    meta = {"kind": "svl-classifier", "class_names": NAMES, "files_up_axis": "y"}
    _, ckpt = model_checkpoint(tmp_path / "y.safetensors", "e3dsnn_t", meta=meta, out_dim=3)
    pts = np.load(shared_data / "modelnet40" / "modelnet40_pcd1024_test.npz")["points"][0]
    np.save(tmp_path / "shape.npy", pts)
    code, out, err = run_cli("classify", "--checkpoint", ckpt, tmp_path / "shape.npy")
    assert code == 0 and out.count("\n") == 1, err
    [line] = [e for e in err.splitlines() if e.startswith("svl: warning: ")]
    assert "shape.npy: read as z-up (no --up-axis given)" in line
    assert "stored y-up; pass --up-axis y" in line
    code, out, err = run_cli("classify", "--checkpoint", ckpt, tmp_path / "shape.npy", "--up-axis", "y")
    assert code == 0 and "warning" not in err and "inputs: y-up (as given by --up-axis)" in err
