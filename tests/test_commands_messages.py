"""One-line errors that give the right advice, and quiet logs (issue 28, items 11 and 12)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

SVL = str(Path(__file__).resolve().parents[1] / "svl")
NMNIST = ["data.dataset=nmnist", "data.train_per_class=2", "data.test_per_class=1", "train.epochs=1"]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("svl: error: "), err
    return lines[0]


def test_segmentation_with_a_classifier_model_names_the_segmentation_models(tmp_path, run_cli):
    rc, _, err = run_cli("finetune", "task=segmentation", "model.name=e3dsnn_t", f"out_dir={tmp_path / 'r'}")
    assert rc == 2
    line = _one_error_line(err)
    assert "e3dsnn_t is not a segmentation model" in line and "e3dsnn_unet_t" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("task", ["segmentation", "event_classification"])
def test_num_points_zero_is_refused(task, tmp_path, run_cli):
    rc, _, err = run_cli("finetune", f"task={task}", "data.num_points=0", f"out_dir={tmp_path / 'r'}")
    assert rc == 2
    assert "num_points must be an integer >= 1, got 0" in _one_error_line(err)


def test_init_from_a_segmenter_does_not_advise_the_unet(tmp_path, run_cli, shared_data, model_checkpoint):
    root = shared_data / "events" / "nmnist_small"
    if not root.is_dir():
        pytest.skip("N-MNIST samples not in the shared data")
    _, ckpt = model_checkpoint(
        tmp_path / "seg.safetensors", "e3dsnn_unet_t", T=1, D=2, num_classes=3,
        meta={"kind": "svl-segmenter", "class_names": list("abc")},
    )  # fmt: skip
    rc, _, err = run_cli(
        "finetune", "task=event_classification", f"data.root={root}", *NMNIST[1:],
        f"init={ckpt}", f"out_dir={tmp_path / 'r'}",
    )  # fmt: skip
    assert rc == 2
    line = _one_error_line(err)  # and no INFO summary of a run that never started before it
    assert "model.name=e3dsnn_unet_t" not in line and "e3dsnn family" in line and "svl-segmenter" in line


def test_data_info_unknown_format_lists_event_formats_too(tmp_path, run_cli):
    f = tmp_path / "c.npy"
    np.save(f, np.random.rand(20, 3).astype(np.float32))
    rc, _, err = run_cli("data", "info", f, "--format", "bogus")
    assert rc == 2
    line = _one_error_line(err)
    assert "ply" in line and "aedat4" in line and "prophesee" in line


def test_data_info_says_the_up_axis_is_assumed(tmp_path, run_cli):
    f = tmp_path / "c.npy"
    np.save(f, np.random.rand(20, 3).astype(np.float32))
    rc, out, _ = run_cli("data", "info", f)
    assert rc == 0 and "up_axis_in_file: z (assumed" in out


def test_detect_on_an_event_file_says_so(tmp_path, run_cli, model_checkpoint):
    _, ckpt = model_checkpoint(
        tmp_path / "det.safetensors", "e3dsnn_det_t", T=1, D=2, num_classes=2,
        meta={"kind": "svl-detector", "class_names": ["a", "b"]},
    )  # fmt: skip
    rec = tmp_path / "sample.aedat4"
    rec.write_bytes(b"#!AER-DAT4.0\r\n")
    rc, _, err = run_cli("detect", "--checkpoint", ckpt, rec, "-o", tmp_path / "out")
    assert rc == 2
    line = _one_error_line(err)
    assert "is an event file (aedat4), not a point cloud" in line and "unknown extension" not in line


def test_svl_warnings_are_one_user_line_without_source(tmp_path, run_cli):
    from svl.data.events import EVENT_DTYPE

    ev = np.zeros(5, EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"] = [1, 2, 3, 4, 5], [1, 1, 1, 1, 1], [5, 4, 3, 2, 1]
    f = tmp_path / "unsorted.npy"
    np.save(f, ev)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, _, err = run_cli("data", "info", f)
    assert rc == 0, err
    assert [w for w in caught if w.filename.startswith(SVL)] == []
    assert "svl: warning: " in err and "unsorted.npy" in err and "warnings.warn" not in err
    assert "UnsortedEventsWarning" not in err


def test_hf_progress_bars_off_where_svl_bars_are_off(monkeypatch):
    from svl.teachers.base import quiet_hf_progress

    monkeypatch.setenv("SVL_PROGRESS", "0")
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_hf_progress()
    import os

    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
