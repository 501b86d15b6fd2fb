"""`svl finetune task=event_classification` on real N-MNIST recordings: the dataset, both encodings,
init from a 3D checkpoint (channel carry-over), k-fold cross-validation, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from svl.data import build_dataset, collate_points
from svl.data.splits import cv_fold
from svl.models.loading import polarity_from_colour
from svl.tasks import load_task_config, run_task
from svl.tasks.events import EventClassificationTask

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUICK = [
    "data.train_per_class=6", "data.test_per_class=3", "data.num_points=256", "model.voxel_size=0.0625",
    "train.batch_size=8", "train.epochs=2", "train.log_every_steps=1", "train.ckpt_every_steps=0",
    "eval.monitor_test=false",
]  # fmt: skip


@pytest.fixture()
def nmnist(shared_data: Path) -> Path:
    root = shared_data / "events" / "nmnist_small"
    if not root.is_dir():
        pytest.skip("N-MNIST samples not in the shared data")
    return root


def test_nmnist_dataset_reads_the_real_split_lists(nmnist):
    tr = build_dataset("nmnist", "train", root=nmnist, num_points=512, T=6, encoding="bins")
    te = build_dataset("nmnist", "test", root=nmnist, num_points=512)
    assert len(tr) == 1000 and len(te) == 100 and tr.classes == [str(d) for d in range(10)]
    # the list files are the labels: first lines of train1K.txt are 1->5, 2->0, 3->4
    assert tr.labels()[:3].tolist() == [5, 0, 4] and te.labels()[0] == 7
    s = tr[0]
    assert s["steps"].shape == (6, 512, 4) and s["xyz"].shape == (512, 3)
    assert s["step_mask"].sum(0).tolist() == [1] * 512
    assert 0 <= s["xyz"].min() and s["xyz"].max() <= 1 and set(np.unique(s["feats"][:, 3])) <= {0.0, 1.0}
    c = te[0]
    assert "steps" not in c and c["feats"].shape == (512, 4)
    b = collate_points([tr[i] for i in range(3)])
    assert b.extras["steps"].shape == (6, 3, 512, 4)


def test_event_augmentation_shifts_pixels_and_stays_on_the_sensor(nmnist):
    plain = build_dataset("nmnist", "train", root=nmnist, num_points=400)
    aug = build_dataset(
        "nmnist", "train", root=nmnist, num_points=400, event_augment={"shift": 3, "drop": 0.2}
    )
    a, b = plain[5]["xyz"], aug[5]["xyz"]
    assert not np.allclose(a, b) and 0 <= b.min() and b.max() <= 1
    aug.set_epoch(1)
    assert not np.allclose(aug[5]["xyz"], b)  # another epoch, another augmentation
    with pytest.raises(ValueError, match="unknown event augmentation"):
        build_dataset("nmnist", "train", root=nmnist, event_augment={"rotate": 1})


def test_cv_folds_partition_each_class():
    y = np.repeat(np.arange(3), [10, 7, 5])
    idx = np.arange(len(y))
    held = [cv_fold(y, idx, 5, k, 0)[1] for k in range(5)]
    assert np.array_equal(np.sort(np.concatenate(held)), idx)  # every sample held out exactly once
    for k in range(5):
        train, out = cv_fold(y, idx, 5, k, 0)
        assert not set(train) & set(out) and len(train) + len(out) == len(y)
        assert np.bincount(y[out], minlength=3).tolist()[0] == 2  # 10 / 5 of class 0
    with pytest.raises(ValueError, match="cv_fold"):
        cv_fold(y, idx, 5, 5, 0)


def test_event_classification_end_to_end_bins(tmp_path, nmnist, run_cli):
    _, cfg = load_task_config(
        "classification", None, ["task=event_classification", f"out_dir={tmp_path}", *QUICK]
    )
    assert cfg.model.T == 6 and cfg.model.in_channels == 4 and cfg.data.encoding == "bins"
    res = run_task(cfg)
    per_class = np.bincount(build_dataset("nmnist", "test", root=nmnist).labels(), minlength=10)
    assert res["n_test"] == np.minimum(per_class, 3).sum() and res["n_train"] == 60 and 0 <= res["oa"] <= 1
    r = json.loads((tmp_path / "results.json").read_text())
    e = r["energy"]
    assert e["energy_snn_mj"] > 0 and len(e["per_step_energy_snn_mj"]) == 6
    assert sum(e["per_step_energy_snn_mj"]) == pytest.approx(e["energy_snn_mj"], rel=1e-6)
    from svl.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(tmp_path / "final.safetensors")
    assert meta["data"]["input"] == "events" and meta["data"]["encoding"] == "bins"
    assert meta["data"]["sensor_size"] == [34, 34]
    # svl classify reads event files with an event classifier, encoded as in training
    code, out, err = run_cli(
        "classify", "--checkpoint", tmp_path / "final.safetensors", nmnist / "60001.bs2", "--json"
    )
    assert code == 0, err
    r = json.loads(out)[0]
    assert r["label"] in [str(d) for d in range(10)] and r["prepared"]["encoding"] == "bins"
    code, _, err = run_cli(
        "classify", "--checkpoint", tmp_path / "final.safetensors", nmnist / "60001.bs2", "--format", "aedat"
    )
    assert code == 2 and "60001.bs2" in err


def test_cloud_encoding_and_cv_fold(tmp_path, nmnist):
    _, cfg = load_task_config("classification", None, [
        "task=event_classification", f"out_dir={tmp_path}", *QUICK, "data.encoding=cloud", "model.T=1",
        "data.cv_folds=5", "data.cv_fold=1", "train.epochs=1", "energy=false",
    ])  # fmt: skip
    t = EventClassificationTask(cfg)
    tr, te = set(t.train_set.indices.tolist()), set(t.test_set.indices.tolist())
    assert not tr & te and t.test_set.base is t.train_plain  # held-out fold of the training split
    res = run_task(cfg)
    assert res["n_test"] == 30


def test_bins_need_T_and_3d_init_carries_over(tmp_path, nmnist, model_checkpoint):
    _, cfg = load_task_config("classification", None, [
        "task=event_classification", f"out_dir={tmp_path}", *QUICK, "model.T=1",
    ])  # fmt: skip
    with pytest.raises(ValueError, match="model.T >= 2"):
        EventClassificationTask(cfg)
    # a 3D checkpoint: 6 input channels (xyz + colour 0.4), T=1
    src, ckpt = model_checkpoint(tmp_path / "p.safetensors", "e3dsnn_t", voxel_size=0.0625, out_dim=384)
    _, cfg = load_task_config("classification", None, [
        "task=event_classification", f"out_dir={tmp_path / 'ft'}", *QUICK, f"init={ckpt}",
    ])  # fmt: skip
    t = EventClassificationTask(cfg)
    enc = t.build_encoder()
    w6, w4 = src.state_dict()["stem.0.conv.weight"], enc.state_dict()["stem.0.conv.weight"]
    c_dim = [i for i, n in enumerate(w6.shape) if n == 6][0]
    torch.testing.assert_close(w4.narrow(c_dim, 0, 3), w6.narrow(c_dim, 0, 3))
    torch.testing.assert_close(w4.narrow(c_dim, 3, 1), w6.narrow(c_dim, 3, 3).sum(c_dim, keepdim=True))
    deep = "stages.2.blocks.0.conv1.conv.weight"
    torch.testing.assert_close(enc.state_dict()[deep], src.state_dict()[deep])
    # polarity 0.4 through the carried-over layer = colour 0.4 through the original
    x = torch.rand(5, 3)
    f6 = torch.cat([x, torch.full((5, 3), 0.4)], 1)
    f4 = torch.cat([x, torch.full((5, 1), 0.4)], 1)
    W6, W4 = w6.movedim(c_dim, -1)[0], w4.movedim(c_dim, -1)[0]  # one kernel tap: (C_out, C_in)
    torch.testing.assert_close(f6 @ W6.T, f4 @ W4.T)
    # tensors not shaped 6 -> 4 are left alone
    odd = {"a": torch.zeros(5, 3)}
    assert polarity_from_colour(odd, {"a": torch.zeros(5, 2)})["a"].shape == (5, 3)


def test_a_shape_dataset_is_refused(tmp_path):
    _, cfg = load_task_config("classification", None, [
        "task=event_classification", f"out_dir={tmp_path}", "data.dataset=modelnet40",
    ])  # fmt: skip
    with pytest.raises((ValueError, TypeError), match="event|augment|encoding"):
        EventClassificationTask(cfg)


def test_dvs_gesture_protocol_runs_end_to_end(tmp_path):
    """configs/finetune_dvs128_gesture.yaml (T = 6 bins) on a small DvsGesture layout of AEDAT 3.1 files."""
    from svl.data.events import EVENT_DTYPE, write_aedat31

    root = tmp_path / "DvsGesture"
    root.mkdir()
    rng = np.random.default_rng(0)
    names = {"train": ["user01_led.aedat", "user02_led.aedat"], "test": ["user03_led.aedat"]}
    for split, files in names.items():
        for name in files:
            n = 6000
            ev = np.zeros(n, EVENT_DTYPE)
            ev["t"] = np.arange(n) * 100
            # gesture 1 (class 3) moves right, gesture 2 (class 8) moves down
            first = ev["t"] < 300_000
            ev["x"] = np.where(first, 20 + ev["t"] // 4000, 64) + rng.integers(-3, 4, n)
            ev["y"] = np.where(first, 64, 20 + (ev["t"] - 300_000) // 4000) + rng.integers(-3, 4, n)
            ev["p"] = rng.random(n) < 0.5
            write_aedat31(root / name, ev)
            (root / name.replace(".aedat", "_labels.csv")).write_text(
                "class,startTime_usec,endTime_usec\n3,0,290000\n8,300000,590000\n"
            )
        (root / f"trials_to_{split}.txt").write_text("\n".join(files) + "\n")
    _, cfg = load_task_config("classification", CONFIGS / "finetune_dvs128_gesture.yaml", [
        f"data.root={tmp_path}", f"out_dir={tmp_path / 'run'}", "data.num_points=512", "train.epochs=1",
        "train.batch_size=2", "train.ckpt_every_steps=0",
    ])  # fmt: skip
    assert cfg.model.T == 6 and cfg.data.encoding == "bins"
    res = run_task(cfg)
    assert res["n_test"] == 2 and res["n_train"] == 4 and len(res["energy"]["per_step_energy_snn_mj"]) == 6
