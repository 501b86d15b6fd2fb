"""End to end on real ModelNet40 clouds with a real encoder (e3dsnn_t): build-head, zeroshot, classify."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svl.checkpoint import save_checkpoint
from svl.models.heads import build_class_weights, load_head
from svl.models.loading import load_zeroshot_model
from svl.teachers.heads import build_head_file

TEMPLATES = ["a point cloud model of {}.", "a photo of a {}."]


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data, model_checkpoint) -> dict:
    """A pretraining-style checkpoint (e3dsnn_t encoder + text projection) and a head for ModelNet40."""
    d = tmp_path_factory.mktemp("zs")
    g = torch.Generator().manual_seed(0)
    proj = {"text_proj.weight": torch.randn(384, 384, generator=g) / 20, "text_proj.bias": torch.zeros(384)}
    enc, ckpt = model_checkpoint(
        d / "ckpt.safetensors",
        "e3dsnn_t",
        seed=0,
        prefix="encoder.",
        extra=proj,
        meta={"teachers": {"text": "minilm"}, "step": 0},
        out_dim=384,
    )
    tensors = {f"encoder.{k}": v for k, v in enc.state_dict().items()} | proj  # as the file holds them
    names = (shared_data / "labels" / "modelnet40_shape_names.txt").read_text().split()
    head, hmeta = build_head_file(ckpt, names, d / "head.safetensors", templates=TEMPLATES, device="cpu")
    return {"dir": d, "ckpt": ckpt, "head": head, "names": names, "enc": enc, "tensors": tensors}


def test_e3dsnn_folded_argmax_equals_cosine_argmax(run, modelnet_clouds) -> None:
    from svl.data.batch import collate_points

    xyz, _ = modelnet_clouds(8)

    batch = collate_points([{"xyz": x, "label": 0, "index": i} for i, x in enumerate(xyz)])
    model, names, meta = load_zeroshot_model(run["ckpt"], run["head"])
    assert names == run["names"] and meta["teacher"] and len(meta["templates_hash"]) == 64
    with torch.no_grad():
        feats = run["enc"](batch)
        W = load_head(run["head"])[0]["class_weights"]
        cosine = F.normalize(feats, dim=-1) @ W.T
        scores = model(batch)
    assert scores.shape == (len(xyz), 40)
    assert torch.equal(scores.argmax(1), cosine.argmax(1))
    torch.testing.assert_close(scores, feats @ W.T, rtol=1e-3, atol=1e-3)
    # W really is the projected text embedding: rebuild it from the teacher
    from svl.teachers import create_teacher
    from svl.vocab import class_embeddings

    emb = class_embeddings(create_teacher("minilm", device="cpu"), names, TEMPLATES)
    torch.testing.assert_close(build_class_weights(run["tensors"], emb), W, rtol=1e-4, atol=1e-5)


def test_zeroshot_command_writes_report(run, run_cli) -> None:
    out = run["dir"] / "report"
    rc, stdout, err = run_cli(
        "zeroshot", "--checkpoint", run["ckpt"], "--head", run["head"], "--data", "modelnet40",
        "--limit", "16", "--batch-size", "8", "--device", "cpu", "-o", out,
    )  # fmt: skip
    assert rc == 0, err
    rep = json.loads((out / "zeroshot.json").read_text())
    assert rep["num_samples"] == 16 and rep["num_classes"] == 40
    assert 0.0 <= rep["top1"] <= rep["top3"] <= rep["top5"] <= 1.0
    assert (out / "zeroshot_confusion.png").stat().st_size > 1000
    assert "top1=" in stdout


def test_classify_loads_no_text_model(run, modelnet_clouds, run_python) -> None:
    xyz, _ = modelnet_clouds(2)
    files = []
    for i, x in enumerate(xyz):
        f = run["dir"] / f"cloud{i}.npy"
        np.save(f, x.numpy())
        files.append(str(f))
    code = (
        "import sys, json\n"
        "from svl.cli import main\n"
        f"rc = main(['classify', '--checkpoint', {str(run['ckpt'])!r}, '--head', {str(run['head'])!r}, "
        f"'--device', 'cpu', '--json', *{files!r}])\n"
        "bad = [m for m in ('sentence_transformers', 'transformers') if m in sys.modules]\n"
        "print('LOADED', bad)\n"
        "sys.exit(rc)\n"
    )
    rc, stdout, stderr = run_python("-c", code)
    assert rc == 0, stderr
    assert "LOADED []" in stdout
    out = json.loads(stdout[: stdout.index("LOADED")])
    assert [r["file"] for r in out] == files
    for r in out:
        assert r["label"] in run["names"] and len(r["top"]) == 5
        assert r["top"][0]["class"] == r["label"]
        assert r["top"][0]["score"] >= r["top"][-1]["score"]


def test_bad_inputs_give_clear_errors(run, tmp_path, run_cli) -> None:
    rc, _, err = run_cli(
        "classify", "--checkpoint", tmp_path / "nope.safetensors", "--head", run["head"], "x.npy"
    )
    assert rc == 2
    assert "nope.safetensors does not exist" in err
    rc, _, err = run_cli(
        "classify", "--checkpoint", run["ckpt"], "--head", tmp_path / "nohead.safetensors", "x.npy"
    )
    assert rc == 2
    assert "nohead.safetensors does not exist" in err
    # a head built for another checkpoint: same weights but a different file (different step)
    tensors = dict(run["tensors"])
    other = save_checkpoint(
        tmp_path / "other.safetensors",
        tensors,
        {"model": "e3dsnn_t", "model_cfg": {"out_dim": 384}, "step": 1},
    )
    with pytest.raises(ValueError, match="was built for encoder checkpoint sha256"):
        load_zeroshot_model(other, run["head"])
    with pytest.raises(ValueError, match="not a Rep-VLI head file"):
        load_zeroshot_model(run["ckpt"], other)


def test_classify_prepares_y_up_files_in_raw_units_like_the_dataset(run, modelnet_clouds, run_cli) -> None:
    """A y-up file in millimetres, shifted, gets the label of the same cloud stored z-up and normalised."""
    xyz, _ = modelnet_clouds(2)
    raw = run["dir"] / "raw_yup.npy"
    z_up = xyz[0].numpy()
    np.save(raw, (z_up[:, [0, 2, 1]] * np.array([1.0, 1.0, -1.0]) * 1000.0 + 250.0).astype(np.float32))
    ref = run["dir"] / "ref.npy"
    np.save(ref, z_up)
    base = ["classify", "--checkpoint", run["ckpt"], "--head", run["head"], "--device", "cpu"]
    rc, out, err = run_cli(*base, "--json", ref)
    assert rc == 0, err
    want = json.loads(out)[0]
    rc, out, err = run_cli(*base, "--json", "--up-axis", "y", raw)
    assert rc == 0, err
    got = json.loads(out)[0]
    assert got["prepared"]["up_axis"] == "y" and got["prepared"]["gravity_axis"] == "z"
    assert got["prepared"]["scale"] > 100  # millimetres divided out
    assert got["label"] == want["label"]
    assert len(got["top"]) == len(want["top"]) == 5
    for a, b in zip(got["top"], want["top"]):
        assert a["class"] == b["class"] and a["score"] == pytest.approx(b["score"], rel=1e-3, abs=1e-3)
    rc, _, err = run_cli(*base, ref)
    assert rc == 0
    assert "z-up (assumed; pass --up-axis y for y-up files)" in err


def test_classify_warns_on_a_degenerate_cloud(run, run_cli) -> None:
    f = run["dir"] / "three_points.npy"
    np.save(f, np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]] * 20, dtype=np.float32))
    rc, _, err = run_cli("classify", "--checkpoint", run["ckpt"], "--head", run["head"], f)
    assert rc == 0
    assert "svl: warning:" in err and "three_points.npy" in err and "degenerate" in err


def test_gzsl_masks_follow_benchmark_split_and_bias_only_trained_classes() -> None:
    from svl.eval.zeroshot import class_mask, gzsl_masks
    from svl.vocab import MODELNET10_CLASSES

    classes = ["airplane", "bathtub", "bench", "bed", "stool", "chair"]
    bench_seen = [c for c in classes if c not in MODELNET10_CLASSES]  # airplane, bench, stool
    trained = ["airplane", "bench"]  # stool held out of training as pseudo-unseen
    present = np.arange(len(classes))
    seen, bias = gzsl_masks(classes, class_mask(classes, trained), bench_seen, present)
    assert seen.tolist() == [True, False, True, False, True, False]
    assert bias.tolist() == [True, False, True, False, False, False]
    # no benchmark split (or one the trained classes do not fit): trained classes are "seen"
    seen, bias = gzsl_masks(classes, class_mask(classes, trained), None, present)
    assert seen.tolist() == [True, False, True, False, False, False] and bias is None
    other = class_mask(classes, ["airplane", "chair"])
    seen, bias = gzsl_masks(classes, other, bench_seen, present)
    assert seen.tolist() == [True, False, False, False, False, True] and bias is None


def test_a_truncated_checkpoint_is_reported_as_truncated(run, tmp_path, run_cli) -> None:
    cut = tmp_path / "cut.safetensors"
    data = Path(run["ckpt"]).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli("classify", "--checkpoint", cut, "--head", run["head"], "x.npy")
    assert code == 2 and "cut.safetensors is truncated" in err and "sha256" not in err
