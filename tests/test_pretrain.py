"""The pretraining task end to end on real ModelNet40 clouds with the real teachers, at a tiny scale."""

import json

import numpy as np
import pytest
import torch

from svl.config import load_config
from svl.tasks import run_task
from svl.tasks.pretrain import PretrainConfig, PretrainTask, format_results


def make_pretrain_task(cfg):
    """The recipe `svl pretrain` runs for this config (aligned pretraining off modelnet40_zsl)."""
    return PretrainTask.recipe(cfg)(cfg)


def _tiny(tmp_path, **over) -> PretrainConfig:
    overrides = [
        f"out_dir={tmp_path / 'run'}",
        "data.train_per_class=3",
        "data.test_per_class=2",
        "data.calib_per_class=3",
        "teacher.views=1",
        "train.epochs=1",
        "train.batch_size=8",
        "train.max_steps=3",
        "train.log_every_steps=1",
        *[f"{k}={v}" for k, v in over.items()],
    ]
    return load_config(PretrainConfig, None, overrides)


def test_few_step_end_to_end_run(tmp_path, shared_data, svl_cache):
    from svl.checkpoint import read_checkpoint_meta
    from svl.data import build_dataset, collate_points
    from svl.models.loading import load_zeroshot_model

    cfg = _tiny(tmp_path)
    result = run_task(cfg)
    out = tmp_path / "run"
    for f in ("config.yaml", "results.json", "results.txt", "final.safetensors",
              "head_modelnet40_names.safetensors", "head_modelnet40_descriptions.safetensors"):  # fmt: skip
        assert (out / f).is_file(), f
    # no checkpoint picking by default: the end of the schedule is what ships
    assert not (out / "best.safetensors").exists()
    from svl.checkpoint import load_checkpoint

    final, last = load_checkpoint(out / "final.safetensors")[0], load_checkpoint(out / "last.safetensors")[0]
    assert all(torch.equal(final[k], last[k]) for k in last)
    saved = json.loads((out / "results.json").read_text())
    assert saved["train"]["step"] == 3
    for mode in ("names", "descriptions"):
        r = result[mode]
        assert 0.0 <= r["zsl_top1"] <= r["zsl_top5"] <= 1.0
        assert r["folded_vs_cosine_agreement"] == 1.0
        assert np.isfinite(r["gamma"])
        for key in ("gzsl", "gzsl_calibrated"):
            assert set(r[key]) >= {"seen", "unseen", "H"}
    assert result["energy"]["energy_ann_mj"] > 0
    meta = read_checkpoint_meta(out / "final.safetensors")
    assert len(meta["zsl"]["pseudo_unseen_classes"]) == 5
    assert meta["zsl"]["gamma"] == pytest.approx(result["names"]["gamma"])
    # The saved head + checkpoint give the text-free classifier the report was computed with.
    model, names, _ = load_zeroshot_model(
        out / "final.safetensors", out / "head_modelnet40_names.safetensors"
    )
    assert len(names) == 40
    test = build_dataset("modelnet40_zsl", "test")
    with torch.no_grad():
        scores = model(collate_points([test[i] for i in (0, 500, 2000)]))
    assert scores.shape == (3, 40) and torch.isfinite(scores).all()
    assert "ZSL top-1" in format_results(result)
    assert result["table"] == format_results(result)
    assert (out / "results.txt").read_text().strip() == result["table"].strip()
    assert saved["task"] == "pretrain"


def test_pseudo_unseen_classes_never_trained_on(tmp_path, shared_data):
    job = make_pretrain_task(_tiny(tmp_path, **{"data.train_per_class": "null"}))
    trained = {job.classes.index(c) for c in job.trained}
    labels = job.train_plain.labels()[job.train_idx]
    assert set(np.unique(labels)) == trained and len(trained) == 25
    assert not set(job.pseudo) & set(job.trained)
    assert not set(job.unseen) & set(job.seen)
    # Validation mixes held-out trained-class shapes with pseudo-unseen shapes, and no test shape.
    assert set(job.classes[y] for y in job.val_labels) == set(job.trained) | set(job.pseudo)
    val_ids = set(job.val_sets[0].base.indices[job.val_sets[0].indices])
    assert not val_ids & set(job.train_plain.indices[job.train_idx])


def test_bad_settings_are_refused(tmp_path, shared_data):
    with pytest.raises(ValueError, match="pseudo_unseen"):
        make_pretrain_task(_tiny(tmp_path, **{"data.pseudo_unseen": 30}))
    # clouds with no texts or stored targets align to rendered views only, never to their labels
    with pytest.raises(ValueError, match=r"no captions or stored teacher targets.*image-only"):
        make_pretrain_task(_tiny(tmp_path, **{"data.dataset": "modelnet40"}))
    with pytest.raises(ValueError, match="epochz"):
        load_config(PretrainConfig, None, ["train.epochz=3"])
