"""Aligned pretraining (svl/tasks/align.py) on the OpenShape layout and on a user's captioned folder,
both built from real ModelNet40 clouds (tests/conftest.py), plus the bad inputs it must refuse."""

import json
from pathlib import Path

import numpy as np
import pytest

from svl.config import load_config
from svl.tasks import run_task
from svl.tasks.align import AlignedPretrainTask, CaptionTargets, load_class_features
from svl.tasks.pretrain import PretrainConfig, PretrainTask


def make_pretrain_task(cfg):
    """The recipe `svl pretrain` runs for this config (aligned pretraining off modelnet40_zsl)."""
    return PretrainTask.recipe(cfg)(cfg)


def _openshape_cfg(tmp_path: Path, root: Path, *extra: str) -> PretrainConfig:
    feats = root / "meta_data" / "modelnet40" / "cat_name_pt_feat.npy"
    return load_config(
        PretrainConfig,
        None,
        [
            f"out_dir={tmp_path / 'run'}",
            "data.dataset=openshape",
            f"data.root={root}",
            f"data.options.gpt_filter={root / 'meta_data' / 'gpt4_filtering.json'}",
            "data.val_fraction=0.1",
            "train.select_metric=val/score",  # as the shipped aligned configs do (the default picks none)
            "teacher.text=none",
            f"zeroshot=[{{dataset: openshape_modelnet40, root: {root}, class_feats: {feats}, name: mn40}}]",
            "train.epochs=1",
            "train.batch_size=16",
            "train.max_steps=3",
            *extra,
        ],
    )


def test_openshape_layout_end_to_end_without_any_text_tower(tmp_path, openshape_root, monkeypatch):
    import svl.tasks.align
    import svl.tasks.pretrain
    import svl.teachers
    import svl.teachers.base

    def no_teacher(*a, **k):
        raise AssertionError("no teacher may be loaded: every target and class embedding is precomputed")

    for where in (svl.teachers, svl.teachers.base, svl.tasks.align, svl.tasks.pretrain):
        monkeypatch.setattr(where, "create_teacher", no_teacher)
    cfg = _openshape_cfg(tmp_path, openshape_root)
    task = PretrainTask.recipe(cfg)(cfg)
    assert isinstance(task, AlignedPretrainTask)  # any dataset but modelnet40_zsl is aligned pretraining
    result = run_task(cfg)
    out = tmp_path / "run"
    for f in ("final.safetensors", "best.safetensors", "head_mn40.safetensors", "results.json"):
        assert (out / f).is_file(), f
    zs = json.loads((out / "results.json").read_text())["zeroshot"]["mn40"]
    assert zs["n"] == 120 and zs["classes"] == 40 and 0 <= zs["top1"] <= zs["top5"] <= 1
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    val = [r for r in logged if "val/score" in r]
    assert val and "zeroshot/mn40_top1" in val[-1]  # zero-shot curve logged during training
    assert result["best_step"] is not None
    from svl.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(out / "final.safetensors")
    assert meta["contract"]["color"] == "rgb01" and meta["data"]["precomputed_targets"] is True
    assert read_checkpoint_meta(out / "best.safetensors")["select_metric"] == "val/score"


def test_openshape_training_draws_one_view_and_one_text(tmp_path, openshape_root):
    task = make_pretrain_task(_openshape_cfg(tmp_path, openshape_root))
    task.setup()
    s0 = task.train_set[0]
    assert s0["image_emb"].shape == (1280,) and s0["text_emb"].shape == (1280,)
    stored = np.load(task.train_aug.files[int(task.train_idx[0])], allow_pickle=True).item()
    views, thumb = stored["image_feat"], stored.get("thumbnail_feat")
    drawn = [s0["image_emb"]]
    for e in range(6):
        task.train_set.set_epoch(e)
        drawn.append(task.train_set[0]["image_emb"])
    # every drawn target is one stored view (or the thumbnail), never their average
    for d in drawn:
        cands = [*views, *([] if thumb is None else [thumb])]
        assert min(np.abs(d - c).max() for c in cands) < 1e-6
    assert np.abs(views.mean(0) - drawn[0]).max() > 1e-3


def test_captions_folder_end_to_end_with_offline_teachers(tmp_path, captions_root, svl_cache):
    cfg = load_config(
        PretrainConfig,
        None,
        [
            f"out_dir={tmp_path / 'run'}",
            "data.dataset=captions",
            f"data.root={captions_root}",
            "data.val_fraction=0.2",
            "teacher.views=1",
            "zeroshot=[{dataset: modelnet40, per_class: 1}, "
            "{name: few, dataset: modelnet40, per_class: 2, classes: [sofa, chair, bed]}]",
            "train.epochs=1",
            "train.batch_size=8",
            "train.max_steps=2",
        ],
    )
    result = run_task(cfg)
    out = tmp_path / "run"
    assert (out / "head_modelnet40.safetensors").is_file()
    assert result["zeroshot"]["modelnet40"]["n"] == 40
    few = result["zeroshot"]["few"]  # restricted to three classes, scored among them only
    assert few["n"] == 6 and few["classes"] == 3 and few["top3"] == 1.0
    assert 0 <= result["val"]["text_r1"] <= 1 and 0 <= result["val"]["image_r1"] <= 1
    from svl.models.heads import load_head

    _, hmeta = load_head(out / "head_modelnet40.safetensors")
    assert hmeta["teacher"].startswith("minilm") and len(hmeta["class_names"]) == 40


def test_caption_targets_pick_the_caption_and_a_view(captions_root):
    from svl.data import build_dataset

    ds = build_dataset("captions", "train", root=captions_root)
    assert len(ds) == 20 and len(ds.texts) == 30  # first file of each class has two captions
    s = ds[0]
    assert abs(np.linalg.norm(s["xyz"], axis=1).max() - 1) < 1e-5 and abs(s["xyz"].mean(0)).max() < 1e-5
    text = np.arange(30, dtype=np.float32)[:, None].repeat(4, 1)
    views = np.random.default_rng(0).normal(size=(20, 3, 4)).astype(np.float32)
    mean = CaptionTargets(ds, np.arange(20), text, views, view_target="mean")[5]
    assert np.allclose(mean["image_emb"], views[5].mean(0)) and mean["text_emb"][0] == mean["text_id"]
    rnd = CaptionTargets(ds, np.arange(20), text, views)[5]
    assert any(np.allclose(rnd["image_emb"], v) for v in views[5])


# ----------------------------------------------------------------------------- bad input
def _copy_layout(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit_first_shape(root: Path, edit) -> Path:
    items = json.loads((root / "meta_data" / "split" / "train.json").read_text())
    f = root / "objaverse" / Path(items[0]["data_path"]).name
    d = np.load(f, allow_pickle=True).item()
    edit(d)
    np.save(f, np.array(d, dtype=object), allow_pickle=True)
    return f


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.pop("image_feat"), ["image_feat", "missing"]),
        (lambda d: d.__setitem__("msft_caption_feat", {"original": np.full(1280, np.nan, np.float32)}),
         ["msft_caption_feat", "NaN"]),
        (lambda d: d.__setitem__("thumbnail_feat", np.ones(768, np.float32)), ["thumbnail_feat", "768-d"]),
    ],
)  # fmt: skip
def test_bad_openshape_files_stop_the_run_before_training(tmp_path, openshape_root, edit, words):
    root = _copy_layout(openshape_root, tmp_path / "os")
    bad = _edit_first_shape(root, edit)
    with pytest.raises(ValueError) as e:
        run_task(_openshape_cfg(tmp_path, root))
    msg = str(e.value)
    assert str(bad) in msg and all(w in msg for w in words), msg
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_captions_naming_missing_files_are_refused(tmp_path, captions_root):
    from svl.data import build_dataset

    root = _copy_layout(captions_root, tmp_path / "cap")
    with open(root / "captions.csv", "a") as fh:
        fh.write("chair/none.npy,a chair that is not there\n")
    with pytest.raises(FileNotFoundError, match=r"captions\.csv.*1 captioned file.*chair/none\.npy"):
        build_dataset("captions", "train", root=root)
    (root / "captions.csv").write_text("path,text\na.npy,x\n")
    with pytest.raises(ValueError, match="'file' and 'caption'"):
        build_dataset("captions", "train", root=root)
    (root / "captions.json").write_text(json.dumps([{"file": "airplane/0.npy", "caption": " "}]))
    with pytest.raises(ValueError, match="empty"):
        build_dataset("captions", "train", root=root, captions="captions.json")


def test_class_feature_files_are_checked(tmp_path):
    p = tmp_path / "cat.npy"
    np.save(p, np.ones((40, 64), np.float32))
    assert load_class_features(p, 40, 64).shape == (40, 64)
    with pytest.raises(ValueError, match=r"expected \(15, D\)"):
        load_class_features(p, 15, 64)
    with pytest.raises(ValueError, match="64-d but the text targets are 1280-d"):
        load_class_features(p, 40, 1280)
    np.save(p, np.full((40, 64), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        load_class_features(p, 40, 64)


def test_selecting_checkpoints_on_a_test_split_is_refused(tmp_path, openshape_root):
    cfg = _openshape_cfg(tmp_path, openshape_root, "train.select_metric=zeroshot/mn40_top1")
    with pytest.raises(ValueError, match="test split"):
        make_pretrain_task(cfg)


def test_the_gpu_config_runs_on_cpu_at_small_scale(tmp_path, openshape_root):
    """configs/pretrain_openshape_l.yaml as shipped, with only sizes, hardware and paths overridden."""
    from svl.tasks import load_task_config
    from svl.utils import repo_root

    feats = openshape_root / "meta_data" / "modelnet40" / "cat_name_pt_feat.npy"
    cls, cfg = load_task_config(
        "pretrain",
        repo_root() / "configs" / "pretrain_openshape_l.yaml",
        [
            f"data.root={openshape_root}",
            "data.options.split_file=${data.root}/meta_data/split/train.json",
            f"zeroshot=[{{name: modelnet40, dataset: openshape_modelnet40, root: {openshape_root}, "
            f"class_feats: {feats}}}]",
            "data.val_fraction=0.1",
            "model.name=e3dsnn_t",  # -L is ~20 s a step on this CPU
            "train.sync_bn=false",
            "train.amp=off",
            "train.num_workers=0",
            "train.batch_size=8",
            "train.max_steps=2",
            f"out_dir={tmp_path / 'run'}",
        ],
    )
    assert cfg.train.epochs == 250 and cfg.model.out_dim == 1280 and cfg.teacher.text == "none"
    result = run_task(cfg, cls)
    assert result["zeroshot"]["modelnet40"]["classes"] == 40


def test_precomputed_arrays_of_any_dimension(tmp_path, shared_data):
    """aligned_npz: real clouds with 16-d text and 4 x 24-d image targets; then a NaN is refused."""
    with np.load(shared_data / "modelnet40" / "modelnet40_pcd1024_train.npz") as z:
        pts, lab = z["points"][::300][:30], z["labels"][::300][:30]
    rng = np.random.default_rng(0)
    text_c, img_c = rng.normal(size=(40, 16)), rng.normal(size=(40, 24))
    arrays = {
        "points": pts,
        "labels": lab,
        "text_emb": (text_c[lab] + 0.1 * rng.normal(size=(30, 16))).astype(np.float32),
        "image_emb": (img_c[lab][:, None] + 0.1 * rng.normal(size=(30, 4, 24))).astype(np.float32),
    }
    np.savez(tmp_path / "train.npz", **arrays)
    np.save(tmp_path / "names.npy", text_c.astype(np.float32))
    cfg = load_config(
        PretrainConfig,
        None,
        [
            f"out_dir={tmp_path / 'run'}",
            "data.dataset=aligned_npz",
            f"data.root={tmp_path}",
            "data.val_fraction=0.2",
            "teacher.text=none",
            f"zeroshot=[{{dataset: modelnet40, per_class: 1, class_feats: {tmp_path / 'names.npy'}}}]",
            "train.epochs=1",
            "train.batch_size=8",
            "train.max_steps=2",
        ],
    )
    result = run_task(cfg)
    assert result["zeroshot"]["modelnet40"]["n"] == 40
    arrays["image_emb"][3, 2, 5] = np.nan
    np.savez(tmp_path / "train.npz", **arrays)
    with pytest.raises(ValueError, match=r"train\.npz: 'image_emb' holds NaN"):
        make_pretrain_task(load_config(PretrainConfig, None, [*cfg_overrides(cfg)]))


def cfg_overrides(cfg: PretrainConfig) -> list[str]:
    return [f"data.dataset={cfg.data.dataset}", f"data.root={cfg.data.root}", f"out_dir={cfg.out_dir}2"]


def test_label_free_image_only_pretraining_reads_no_label_and_feeds_finetune(tmp_path, shared_data, svl_cache,
                                                                             monkeypatch):  # fmt: skip
    """configs/pretrain_labelfree_modelnet40.yaml's recipe (views + MSE, no text) on a folder of real
    clouds; its checkpoint then initialises a fine-tune."""
    from svl.data.folders import ClassFolder

    z = np.load(shared_data / "modelnet40" / "modelnet40_pcd1024_train.npz")
    names = [str(c) for c in z["classes"]]
    for c in ("chair", "lamp"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(z["labels"] == names.index(c))[:8]):
            np.save(tmp_path / "data" / c / f"{j}.npy", z["points"][i])

    def no_labels(self):
        raise AssertionError("label-free pretraining read the labels")

    monkeypatch.setattr(ClassFolder, "labels", no_labels)
    base = [f"data.root={tmp_path / 'data'}", "data.dataset=folder", "data.val_fraction=0.25"]
    base += ["teacher.views=1", "train.epochs=1", "train.batch_size=4"]
    with pytest.raises(ValueError, match="image-only"):
        make_pretrain_task(load_config(PretrainConfig, None, [f"out_dir={tmp_path / 'x'}", *base]))
    cfg = load_config(
        PretrainConfig, None, [f"out_dir={tmp_path / 'pre'}", *base, "teacher.text=none", "loss.l_text=0"]
    )
    result = run_task(cfg)
    assert "text_r1" not in result["val"] and 0 <= result["val"]["image_r1"] <= 1
    monkeypatch.undo()
    from svl.tasks import load_task_config

    _, ft = load_task_config("classification", None, [
        f"out_dir={tmp_path / 'ft'}", f"init={tmp_path / 'pre' / 'final.safetensors'}",
        "data.dataset=folder", f"data.root={tmp_path / 'data'}", "data.options={test_fraction: 0.25}",
        "train.epochs=1", "train.batch_size=4", "energy=false",
    ])  # fmt: skip
    res = run_task(ft)
    assert res["classes"] == 2 and res["n_test"] == 4
