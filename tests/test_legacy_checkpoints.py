"""Checkpoints written before the second architecture step still load, and compute what they did.

tests/data/legacy/ holds one small file of each kind written by main at f125d5e (before the step) with
`tests/data/legacy/make_legacy.py`, and `expected.npz`: each file's output on fixed real inputs, computed
by that same old code. Today's one loading path (`svl.models.load_model`) must build every kind and
reproduce those outputs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from svl.models import load_model
from svl.models.loading import CLASSIFIER_KIND, DETECTOR_KIND, PRETRAIN_KIND, SEGMENTER_KIND

LEGACY = Path(__file__).with_name("data") / "legacy"
KINDS = {
    "pretrain": (PRETRAIN_KIND, "points"),
    "classifier": (CLASSIFIER_KIND, "points"),
    "events": (CLASSIFIER_KIND, "events"),
    "segmenter": (SEGMENTER_KIND, "points"),
    "detector": (DETECTOR_KIND, "points"),
    "image_student": (CLASSIFIER_KIND, "images"),
}


def _maker():
    spec = importlib.util.spec_from_file_location("make_legacy", LEGACY / "make_legacy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fixed_inputs(shared_data):
    return _maker().inputs()


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_legacy_checkpoint_loads_by_its_kind_and_computes_what_it_did(name, fixed_inputs):
    kind, inputs = KINDS[name]
    loaded = load_model(LEGACY / f"{name}.safetensors")
    assert loaded.kind == kind and loaded.inputs == inputs
    assert (loaded.class_names is None) == (kind == PRETRAIN_KIND)
    x = fixed_inputs[inputs]
    if inputs == "images":
        x = _maker()._image_batch(x)
    with torch.no_grad():
        y = loaded.model(x)
    ref = np.load(LEGACY / "expected.npz")
    got = {f"{name}.{k}": v.numpy() for k, v in y.items()} if isinstance(y, dict) else {name: y.numpy()}
    assert got and set(got) == {k for k in ref.files if k == name or k.startswith(name + ".")}
    for k, v in got.items():
        np.testing.assert_allclose(v, ref[k], atol=1e-5, rtol=0, err_msg=k)


def test_the_legacy_zero_shot_pair_loads_and_refuses_the_wrong_kind(fixed_inputs):
    zs = load_model(LEGACY / "pretrain.safetensors", head=LEGACY / "pretrain_head.safetensors")
    assert zs.class_names and len(zs.class_names) == zs.model(fixed_inputs["points"]).shape[1]
    with pytest.raises(
        ValueError, match=r"pretrain.safetensors holds kind 'svl-pretrain', not a segmentation"
    ):
        load_model(LEGACY / "pretrain.safetensors", kind=SEGMENTER_KIND)
    with pytest.raises(
        ValueError, match=r"classifier.safetensors holds kind 'svl-classifier', not a detection"
    ):
        load_model(LEGACY / "classifier.safetensors", kind=DETECTOR_KIND)


def test_svl_classify_reads_a_legacy_classifier(tmp_path, run_cli, fixed_inputs):
    pts = tmp_path / "cloud.npy"
    np.save(pts, fixed_inputs["points"].xyz[0].numpy())
    code, out, err = run_cli("classify", "--checkpoint", LEGACY / "classifier.safetensors", pts, "--json")
    assert code == 0, err
    names = load_model(LEGACY / "classifier.safetensors").class_names
    assert json.loads(out)[0]["label"] in names
