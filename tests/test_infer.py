"""svl.infer: one `classify` for every modality, the one loader (`svl.models.load_model`) refusing the
wrong checkpoint, and the layers that keep inference apart from training recipes and metrics apart
from models.

Why: `svl classify` used to choose points / events / images in the CLI; the library call must read each
file the way the checkpoint was trained, whether it gets a checkpoint path or a built model, and the
commands that predict must never import a training task.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_structure import import_edges, layering_violations, svl_modules

from svl.infer import classify, detect, segment
from svl.models import load_model

NAMES = ["airplane", "chair", "table"]
CLASSIFIER = {"kind": "svl-classifier", "class_names": NAMES}


def test_classify_reads_each_modality_as_the_checkpoint_was_trained(
    tmp_path, model_checkpoint, modelnet_clouds, shared_data
) -> None:
    xyz, _ = modelnet_clouds(1)
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, xyz[0].numpy())
    recording = shared_data / "events" / "nmnist_small" / "60001.bs2"
    digit = tmp_path / "digit.png"
    Image.fromarray((np.arange(100).reshape(10, 10) * 2).astype(np.uint8)).save(digit)
    events = {"input": "events", "encoding": "cloud", "num_points": 256, "sensor_size": [34, 34]}
    image = {"input": "image", "image_size": 8, "channels": 1}
    cases = [  # (model, its config, meta["data"], a file, a key only that modality's reading reports)
        ("e3dsnn_t", {"out_dim": 3}, {"dataset": "modelnet40"}, cloud, "gravity_axis"),
        ("e3dsnn_t", {"out_dim": 3, "in_channels": 4, "T": 1}, events, recording, "encoding"),
        ("spikformer_tiny", {"out_dim": 3, "T": 1, "in_channels": 1}, image, digit, "resized_to"),
    ]
    for i, (name, cfg, data, file, key) in enumerate(cases):
        meta = {**CLASSIFIER, "data": data}
        model, ckpt = model_checkpoint(tmp_path / f"c{i}.safetensors", name, meta=meta, **cfg)
        got = classify(ckpt, [file], topk=2)
        assert [r["file"] for r in got] == [str(file)] and key in got[0]["prepared"], (name, got)
        assert got[0]["label"] in NAMES and len(got[0]["top"]) == 2
        # a built model with the checkpoint's names and data section is read the same way
        assert classify(model, [file], class_names=NAMES, data=data, topk=2) == got
    assert got[0]["prepared"] == {"image_size": [10, 10], "resized_to": 8, "channels": 1}


def test_inference_refuses_a_checkpoint_of_another_kind(tmp_path, model_checkpoint) -> None:
    meta = {"kind": "svl-segmenter", "class_names": ["x"]}
    _, seg = model_checkpoint(tmp_path / "seg.safetensors", "e3dsnn_t", meta=meta)
    with pytest.raises(
        ValueError, match="seg.safetensors holds kind 'svl-segmenter', not a classification checkpoint"
    ):
        classify(seg, ["x.npy"])
    with pytest.raises(
        ValueError, match="seg.safetensors holds kind 'svl-segmenter', not a detection checkpoint"
    ):
        detect(seg, ["x.npy"], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nope.safetensors does not exist"):
        segment(tmp_path / "nope.safetensors", ["x.npy"], tmp_path / "out")
    assert load_model(seg).class_names == ["x"]  # no kind asked: whatever the checkpoint holds


PREDICTING = ["svl.cli.zeroshot", "svl.cli.segment", "svl.cli.detect", "svl.cli.retrieve", "svl.cli.energy"]


@pytest.mark.parametrize("lower", ["svl.infer", "svl.plots", *PREDICTING])
def test_inference_never_reaches_a_training_recipe(lower: str) -> None:
    """classify, zeroshot, build-head, segment, detect, retrieve, energy: no svl.tasks, even lazily."""
    modules = svl_modules()
    assert lower in modules, f"{lower} not found"
    chains = layering_violations(modules, import_edges(modules), lower, "svl.tasks")
    assert not chains, f"{lower} imports svl.tasks:\n  " + "\n  ".join(chains)


@pytest.mark.parametrize("upper", ["svl.infer", "svl.models"])
def test_metrics_never_run_a_model(upper: str) -> None:
    modules = svl_modules()
    chains = layering_violations(modules, import_edges(modules), "svl.eval", upper)
    assert not chains, f"svl.eval imports {upper}:\n  " + "\n  ".join(chains)


def test_plots_import_only_the_low_floors() -> None:
    modules = svl_modules()
    targets = {e.target for e in import_edges(modules) if e.source == "svl.plots"}
    assert targets <= {"svl.boxes", "svl.utils", "svl.vocab"}, targets
