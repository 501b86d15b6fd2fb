"""`svl finetune` (task `classification`) on real ModelNet40 clouds: numerics against hand-computed
values, init from checkpoints, label subsets and few-shot episodes, resume, bad input, `svl classify`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from svl.data.splits import balanced_fraction, few_shot_episode
from svl.infer import vote_probabilities
from svl.models.wrappers import Classifier
from svl.tasks import load_task_config, run_task
from svl.tasks.finetune import ClassificationTask

QUICK = [
    "data.classes=[airplane,bathtub,guitar,lamp]", "data.train_per_class=12", "data.test_per_class=6",
    "train.batch_size=8", "train.log_every_steps=1", "train.ckpt_every_steps=0", "energy=false",
]  # fmt: skip


def _cfg(tmp_path: Path, *overrides: str):
    _, cfg = load_task_config("classification", None, [f"out_dir={tmp_path}", *QUICK, *overrides])
    return cfg


# ----------------------------------------------------------------------------- numerics
class _Fixed(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, batch: dict) -> torch.Tensor:
        return self.logits


def test_label_smoothing_matches_the_hand_computed_loss() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    y = torch.tensor([0, 1])
    eps = 0.2
    out = Classifier(_Fixed(logits), label_smoothing=eps)({"labels": y})
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    # smoothed target: (1 - eps) on the label + eps / K on every class
    target = np.full((2, 3), eps / 3)
    target[np.arange(2), y.numpy()] += 1 - eps
    want = float(-(target * np.log(p)).sum(1).mean())
    assert out["loss"].item() == pytest.approx(want, rel=1e-6)
    assert out["acc"].item() == pytest.approx(0.5)
    plain = Classifier(_Fixed(logits), label_smoothing=0.0)({"labels": y})["loss"].item()
    assert plain == pytest.approx(float(-np.log(p[np.arange(2), y.numpy()]).mean()), rel=1e-6)


def test_voting_averages_softmax_probabilities() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    b = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    got = vote_probabilities([a, b]).numpy()

    def sm(x: list[float]) -> np.ndarray:
        e = np.exp(np.asarray(x) - max(x))
        return e / e.sum()

    want = np.stack([(sm([1, 0]) + sm([0, 2])) / 2, (sm([0, 3]) + sm([1, 1])) / 2])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.argmax(1).tolist() == [1, 1]  # the vote flips sample 0 away from pass a's answer


# ----------------------------------------------------------------------------- label subsets, episodes
def test_balanced_fraction_is_class_balanced_nested_and_seeded() -> None:
    y = np.repeat(np.arange(4), [100, 50, 10, 3])
    idx = np.arange(len(y))
    small, big = balanced_fraction(y, idx, 0.1, 0), balanced_fraction(y, idx, 0.5, 0)
    assert np.bincount(y[small]).tolist() == [10, 5, 1, 1]  # at least one shape per class
    assert set(small) <= set(big)
    assert np.array_equal(small, balanced_fraction(y, idx, 0.1, 0))
    assert not np.array_equal(small, balanced_fraction(y, idx, 0.1, 1))
    with pytest.raises(ValueError, match="label_fraction"):
        balanced_fraction(y, idx, 0.0, 0)


def test_few_shot_episodes_are_deterministic_and_class_balanced() -> None:
    rng = np.random.default_rng(0)
    ytr, yte = rng.integers(0, 40, 4000), rng.integers(0, 40, 1200)
    c, s, q = few_shot_episode(ytr, yte, ways=5, shots=10, queries=20, episode=3, seed=0)
    c2, s2, q2 = few_shot_episode(ytr, yte, ways=5, shots=10, queries=20, episode=3, seed=0)
    assert np.array_equal(c, c2) and np.array_equal(s, s2) and np.array_equal(q, q2)
    assert len(set(c)) == 5 and len(set(s)) == 50 and len(set(q)) == 100
    assert sorted(np.bincount(ytr[s], minlength=40)[c]) == [10] * 5
    assert sorted(np.bincount(yte[q], minlength=40)[c]) == [20] * 5
    assert set(ytr[s]) == set(c) == set(yte[q])
    c3, _, _ = few_shot_episode(ytr, yte, ways=5, shots=10, queries=20, episode=4, seed=0)
    assert not np.array_equal(c, c3)
    with pytest.raises(ValueError, match="fewer than"):
        few_shot_episode(ytr, yte, ways=5, shots=10, queries=500, episode=0)


def test_few_shot_task_uses_the_episode(tmp_path) -> None:
    _, cfg = load_task_config("classification", None, [
        f"out_dir={tmp_path}", "data.few_shot.ways=5", "data.few_shot.shots=10", "data.few_shot.episode=2",
    ])  # fmt: skip
    t = ClassificationTask(cfg)
    assert len(t.classes) == 5 and len(t.train_set) == 50 and len(t.test_set) == 100
    assert np.bincount(t.train_set.labels()).tolist() == [10] * 5
    assert np.bincount(t.test_set.labels()).tolist() == [20] * 5


# ----------------------------------------------------------------------------- training end to end
def test_a_short_fine_tune_on_real_clouds_learns_and_reports(tmp_path) -> None:
    res = run_task(_cfg(tmp_path, "train.epochs=6", "eval.monitor_test=true", "eval.votes=2", "energy=true",
                        "eval.precise_bn=6"))  # fmt: skip
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len([r for r in log if "test/oa" in r]) == 6  # the curve: one test point per epoch
    first_acc = next(r["train/acc"] for r in log if "train/acc" in r)
    assert res["oa"] > first_acc + 0.2 and res["oa"] > 0.5
    saved = json.loads((tmp_path / "results.json").read_text())
    assert 0 <= saved["oa"] <= 1 and 0 <= saved["macc"] <= 1 and saved["classes"] == 4
    assert [r["class"] for r in saved["per_class"]] == ["airplane", "bathtub", "guitar", "lamp"]
    assert saved["energy"]["energy_ann_mj"] > saved["energy"]["energy_snn_mj"] > 0
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    assert "overall accuracy" in (tmp_path / "results.txt").read_text()


def test_resume_is_exact(tmp_path) -> None:
    from svl.checkpoint import load_checkpoint

    full = run_task(_cfg(tmp_path / "a", "train.epochs=2"))
    run_task(_cfg(tmp_path / "b", "train.epochs=2", "train.max_steps=5"))
    resumed = run_task(_cfg(tmp_path / "b", "train.epochs=2"), resume=True)
    ta, _ = load_checkpoint(tmp_path / "a" / "final.safetensors")
    tb, _ = load_checkpoint(tmp_path / "b" / "final.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert resumed["oa"] == full["oa"]


def test_linear_probe_freezes_the_encoder_and_classify_reads_the_result(
    tmp_path, run_cli, shared_data, modelnet_clouds, calibrate_bn
) -> None:
    from svl.checkpoint import save_checkpoint
    from svl.data import collate_points
    from svl.models import create_model

    torch.manual_seed(0)
    enc = create_model("e3dsnn_t", out_dim=384)  # untrained, BN statistics of real clouds: it spikes
    xyz, _ = modelnet_clouds(32)
    calibrate_bn(enc, collate_points([{"xyz": x, "label": 0} for x in xyz]))
    tensors = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    ckpt = save_checkpoint(
        tmp_path / "pre.safetensors", tensors, {"model": "e3dsnn_t", "model_cfg": {"out_dim": 384}}
    )
    res = run_task(_cfg(tmp_path / "probe", f"init={ckpt}", "mode=linear_probe", "train.epochs=20"))
    from svl.checkpoint import load_checkpoint

    t, meta = load_checkpoint(tmp_path / "probe" / "final.safetensors")
    body = {k: v for k, v in enc.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(t[f"encoder.{k}"], v) for k, v in body.items())  # frozen: BN stats too
    assert meta["class_names"] == ["airplane", "bathtub", "guitar", "lamp"] and res["oa"] > 0.5
    # svl classify: a fine-tuned checkpoint carries its own head and names
    pts = np.load(shared_data / "modelnet40" / "modelnet40_pcd1024_test.npz")
    i = int(np.flatnonzero(pts["labels"] == 0)[0])  # an airplane
    np.save(tmp_path / "plane.npy", pts["points"][i])
    ft = str(tmp_path / "probe" / "final.safetensors")
    code, stdout, _ = run_cli("classify", "--checkpoint", ft, str(tmp_path / "plane.npy"), "--json")
    assert code == 0
    out = json.loads(stdout)
    assert out[0]["label"] in meta["class_names"] and len(out[0]["top"]) == 4
    assert meta["files_up_axis"] == "z" and out[0]["warnings"] == []  # the shared npz stands z-up


def test_init_loads_exactly_the_encoder_weights_and_refuses_another(tmp_path, model_checkpoint) -> None:
    enc, ckpt = model_checkpoint(tmp_path / "pre.safetensors", "e3dsnn_t", prefix="encoder.", out_dim=384)
    t = ClassificationTask(_cfg(tmp_path / "run", f"init={ckpt}"))
    model = t.build_encoder()
    got = model.state_dict()
    for k, v in enc.state_dict().items():
        if k.startswith("head."):
            assert got[k].shape[-1] == 4 or got[k].shape[0] == 4  # a new 4-way head
        else:
            assert torch.equal(got[k], v), k
    _, other = model_checkpoint(tmp_path / "pn.safetensors", "spike_pointnet", prefix="encoder.", out_dim=384)
    with pytest.raises(ValueError, match=r"spike_pointnet.*e3dsnn_t"):
        ClassificationTask(_cfg(tmp_path / "run2", f"init={other}")).build_encoder()
    _, d2 = model_checkpoint(tmp_path / "d2.safetensors", "e3dsnn_t", prefix="encoder.", out_dim=384, D=2)
    with pytest.raises(ValueError, match=r"d2.safetensors.*D: checkpoint 2 vs config 4"):
        ClassificationTask(_cfg(tmp_path / "run3", f"init={d2}")).build_encoder()


def test_rep_vli_head_starts_the_fine_tune_at_the_zero_shot_accuracy(
    tmp_path, model_checkpoint, shared_data
) -> None:
    from svl.infer import encode
    from svl.models.loading import load_zeroshot_model
    from svl.teachers.heads import build_head_file

    g = torch.Generator().manual_seed(0)
    proj = {"text_proj.weight": torch.randn(384, 384, generator=g) / 20, "text_proj.bias": torch.zeros(384)}
    _, ckpt = model_checkpoint(
        tmp_path / "pre.safetensors", "e3dsnn_t", prefix="encoder.", extra=proj,
        meta={"teachers": {"text": "minilm"}}, out_dim=384,
    )  # fmt: skip
    # the head lists the classes in another order than the dataset: rows are matched by name
    names = ["lamp", "guitar", "airplane", "bathtub"]
    head, _ = build_head_file(ckpt, names, tmp_path / "head.safetensors", templates=["a {}."], device="cpu")
    task = ClassificationTask(_cfg(tmp_path / "run", f"init={ckpt}", f"head={head}"))
    ft = task.build_encoder().eval()
    assert all(p.requires_grad for p in ft.head.parameters())  # the fine-tune trains the head it starts from
    zs, zs_names, _ = load_zeroshot_model(ckpt, head)
    a = encode(ft, task.test_set).argmax(1).numpy()
    b = encode(zs, task.test_set).argmax(1).numpy()
    assert [task.classes[i] for i in a] == [zs_names[i] for i in b]


# ----------------------------------------------------------------------------- users' folders, bad input
def _folder(root: Path, shared_data: Path, per_class: int = 6, empty: str | None = None) -> Path:
    z = np.load(shared_data / "modelnet40" / "modelnet40_pcd1024_train.npz")
    names = [str(c) for c in z["classes"]]
    for c in ("chair", "cup", "guitar"):
        (root / c).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(z["labels"] == names.index(c))[:per_class]):
            np.save(root / c / f"{c}_{j}.npy", z["points"][i])
    if empty:
        (root / empty).mkdir()
    return root


def test_class_folder_dataset_fine_tunes_end_to_end(tmp_path, shared_data) -> None:
    root = _folder(tmp_path / "mine", shared_data)
    res = run_task(_cfg(tmp_path / "run", "data.dataset=folder", f"data.root={root}", "data.classes=[]",
                        "data.options={test_fraction: 0.34}", "train.epochs=2"))  # fmt: skip
    assert res["classes"] == 3 and res["n_test"] == 6 and res["n_train"] == 12


def test_bad_input_is_named(tmp_path, shared_data, model_checkpoint) -> None:
    from svl.data.base import DATASETS, ArrayDataset, register_dataset

    with pytest.raises(ValueError, match="nope"):
        ClassificationTask(_cfg(tmp_path / "a", "data.dataset=nope"))
    with pytest.raises(ValueError, match=r"data.classes: \['spaceship'\]"):
        ClassificationTask(_cfg(tmp_path / "b", "data.classes=[airplane,spaceship]"))
    root = _folder(tmp_path / "mine", shared_data, per_class=2, empty="desk")
    with pytest.raises(ValueError, match=r"desk.*holds no point-cloud files"):
        ClassificationTask(
            _cfg(tmp_path / "c", "data.dataset=folder", f"data.root={root}", "data.classes=[]")
        )

    @register_dataset("_bad_labels")
    def _bad(split, root, transforms, seed):
        pts = np.zeros((3, 16, 3), np.float32)
        return ArrayDataset(pts, np.array([0, 1, 7]), ["a", "b"], split, transforms, seed, name="_bad_labels")

    try:
        with pytest.raises(
            ValueError, match=r"_bad_labels/train: label 7 of shape 2 is outside the class list"
        ):
            ClassificationTask(_cfg(tmp_path / "d", "data.dataset=_bad_labels", "data.classes=[]"))
    finally:
        DATASETS.unregister("_bad_labels")
    with pytest.raises(ValueError, match="mode must be"):
        ClassificationTask(_cfg(tmp_path / "e", "mode=probe"))
    with pytest.raises(ValueError, match="on the test split"):
        ClassificationTask(_cfg(tmp_path / "f", "train.select_metric=test/oa"))


def test_scanobjectnn_fine_tunes_with_its_variant_named(tmp_path, shared_data) -> None:
    h5py = pytest.importorskip("h5py")
    z = np.load(shared_data / "modelnet40" / "modelnet40_pcd1024_train.npz")
    so = tmp_path / "scanobjectnn" / "main_split"
    so.mkdir(parents=True)
    for split, stem, per in (("train", "training", 3), ("test", "test", 1)):
        off = 0 if split == "train" else 3
        idx = np.concatenate([np.flatnonzero(z["labels"] == c)[off : off + per] for c in range(15)])
        pts = z["points"][idx][:, :, [0, 2, 1]]  # y-up on disk, as ScanObjectNN stores it
        with h5py.File(so / f"{stem}_objectdataset_augmentedrot_scale75.h5", "w") as h:
            h["data"], h["label"] = pts, np.repeat(np.arange(15), per)
    base = ["data.dataset=scanobjectnn", f"data.root={tmp_path}", "data.classes=[]"]
    base.append("data.train_per_class=null")
    with pytest.raises(ValueError, match="name the variant"):
        ClassificationTask(_cfg(tmp_path / "a", *base))
    res = run_task(_cfg(tmp_path / "b", *base, "data.options={variant: PB_T50_RS}", "train.epochs=1"))
    assert res["classes"] == 15 and res["n_test"] == 15 and res["n_train"] == 45


def test_cli_errors_name_the_key_or_file(tmp_path, run_cli, model_checkpoint) -> None:
    code, _, err = run_cli("finetune", f"out_dir={tmp_path / 'a'}", "data.dataset=modelnet4O")
    assert code == 2 and "modelnet4O" in err
    _, other = model_checkpoint(tmp_path / "pn.safetensors", "spike_pointnet", prefix="encoder.", out_dim=384)
    code, _, err = run_cli("finetune", f"out_dir={tmp_path / 'b'}", f"init={other}", *QUICK)
    assert code == 2 and "pn.safetensors" in err and "spike_pointnet" in err


def test_precise_bn_turns_a_silent_random_encoder_into_a_random_features_probe(tmp_path) -> None:
    """Untrained BN statistics leave E-3DSNN silent (constant features, chance accuracy); statistics
    re-estimated on the training shapes make the scratch probe a real random-features baseline."""
    silent = run_task(_cfg(tmp_path / "a", "mode=linear_probe", "train.epochs=10"))
    probe = run_task(_cfg(tmp_path / "b", "mode=linear_probe", "train.epochs=10", "eval.precise_bn=4"))
    assert silent["oa"] == pytest.approx(0.25) and probe["oa"] > 0.5
