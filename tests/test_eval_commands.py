"""End to end on real ModelNet40 clouds with a real encoder (e3dsnn_t): build-head, zeroshot, classify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svl.checkpoint import save_checkpoint
from svl.cli import main
from svl.models.heads import build_class_weights, build_head_file, load_head, load_zeroshot_model

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = ["a point cloud model of {}.", "a photo of a {}."]


def _clouds(root: Path, n: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    with np.load(root / "modelnet40" / "modelnet40_pcd1024_test.npz") as z:
        idx = np.linspace(0, len(z["labels"]) - 1, n).astype(int)
        return torch.from_numpy(z["points"][idx].copy()), z["labels"][idx]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A pretraining-style checkpoint (e3dsnn_t encoder + text projection) and a head for ModelNet40."""
    from svl.models import create_model
    from svl.utils import data_root

    root = data_root(required=False)
    if root is None:
        pytest.skip("shared data not found (set SVL_DATA)")
    d = tmp_path_factory.mktemp("zs")
    torch.manual_seed(0)
    cfg = {"out_dim": 384}
    enc = create_model("e3dsnn_t", **cfg).eval()
    g = torch.Generator().manual_seed(0)
    tensors = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    tensors["text_proj.weight"] = torch.randn(384, 384, generator=g) / 20
    tensors["text_proj.bias"] = torch.zeros(384)
    meta = {"model": "e3dsnn_t", "model_cfg": cfg, "teachers": {"text": "minilm"}, "step": 0}
    ckpt = save_checkpoint(d / "ckpt.safetensors", tensors, meta)
    names = (root / "labels" / "modelnet40_shape_names.txt").read_text().split()
    head, hmeta = build_head_file(ckpt, names, d / "head.safetensors", templates=TEMPLATES, device="cpu")
    return {
        "dir": d,
        "ckpt": ckpt,
        "head": head,
        "names": names,
        "root": root,
        "enc": enc,
        "tensors": tensors,
    }


def test_e3dsnn_folded_argmax_equals_cosine_argmax(run) -> None:
    from svl.data.batch import collate_points

    xyz, _ = _clouds(run["root"])

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


def test_zeroshot_command_writes_report(run, capsys) -> None:
    out = run["dir"] / "report"
    rc = main(
        ["zeroshot", "--checkpoint", str(run["ckpt"]), "--head", str(run["head"]), "--data", "modelnet40",
         "--limit", "16", "--batch-size", "8", "--device", "cpu", "-o", str(out)]
    )  # fmt: skip
    assert rc == 0
    rep = json.loads((out / "zeroshot.json").read_text())
    assert rep["num_samples"] == 16 and rep["num_classes"] == 40
    assert 0.0 <= rep["top1"] <= rep["top3"] <= rep["top5"] <= 1.0
    assert (out / "zeroshot_confusion.png").stat().st_size > 1000
    assert "top1=" in capsys.readouterr().out


def test_classify_loads_no_text_model(run) -> None:
    xyz, _ = _clouds(run["root"], 2)
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
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "LOADED []" in res.stdout
    out = json.loads(res.stdout[: res.stdout.index("LOADED")])
    assert [r["file"] for r in out] == files
    for r in out:
        assert r["label"] in run["names"] and len(r["top"]) == 5
        assert r["top"][0]["class"] == r["label"]
        assert r["top"][0]["score"] >= r["top"][-1]["score"]


def test_bad_inputs_give_clear_errors(run, tmp_path, capsys) -> None:
    args = [
        "classify",
        "--checkpoint",
        str(tmp_path / "nope.safetensors"),
        "--head",
        str(run["head"]),
        "x.npy",
    ]
    assert main(args) == 2
    assert "nope.safetensors does not exist" in capsys.readouterr().err
    args = [
        "classify",
        "--checkpoint",
        str(run["ckpt"]),
        "--head",
        str(tmp_path / "nohead.safetensors"),
        "x.npy",
    ]
    assert main(args) == 2
    assert "nohead.safetensors does not exist" in capsys.readouterr().err
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


def test_classify_prepares_y_up_files_in_raw_units_like_the_dataset(run, capsys) -> None:
    """A y-up file in millimetres, shifted, gets the label of the same cloud stored z-up and normalised."""
    xyz, _ = _clouds(run["root"], 2)
    raw = run["dir"] / "raw_yup.npy"
    z_up = xyz[0].numpy()
    np.save(raw, (z_up[:, [0, 2, 1]] * np.array([1.0, 1.0, -1.0]) * 1000.0 + 250.0).astype(np.float32))
    ref = run["dir"] / "ref.npy"
    np.save(ref, z_up)
    base = ["classify", "--checkpoint", str(run["ckpt"]), "--head", str(run["head"]), "--device", "cpu"]
    assert main([*base, "--json", str(ref)]) == 0
    want = json.loads(capsys.readouterr().out)[0]
    assert main([*base, "--json", "--up-axis", "y", str(raw)]) == 0
    got = json.loads(capsys.readouterr().out)[0]
    assert got["prepared"]["up_axis"] == "y" and got["prepared"]["gravity_axis"] == "z"
    assert got["prepared"]["scale"] > 100  # millimetres divided out
    assert got["label"] == want["label"]
    for a, b in zip(got["top"], want["top"]):
        assert a["class"] == b["class"] and a["score"] == pytest.approx(b["score"], rel=1e-3, abs=1e-3)
    assert main([*base, str(ref)]) == 0
    assert "z-up (assumed; pass --up-axis y for y-up files)" in capsys.readouterr().err


def test_classify_warns_on_a_degenerate_cloud(run, capsys) -> None:
    f = run["dir"] / "three_points.npy"
    np.save(f, np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]] * 20, dtype=np.float32))
    assert main(["classify", "--checkpoint", str(run["ckpt"]), "--head", str(run["head"]), str(f)]) == 0
    err = capsys.readouterr().err
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
