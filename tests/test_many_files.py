"""Many files in one call (issue 28, items 8 and 9): `svl classify`, `svl segment` and `svl detect`
report every file's result or its error, go on past a bad file and exit 2 at the end with a count;
outputs are named by the path below the files' common folder, so two `000000.bin` of different
sequences both survive; `-o` naming an existing file is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TINY = {"stem_channels": 4, "channels": [4, 8, 8, 8], "depth": 1}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """Tiny untrained checkpoints of the kinds the many-file commands read."""
    from svl.checkpoint import save_checkpoint
    from svl.models import create_model
    from svl.models.loading import CLASSIFIER_KIND, DETECTOR_KIND, SEGMENTER_KIND

    d = tmp_path_factory.mktemp("ckpts")
    det = {**TINY, "num_classes": 1, "point_cloud_range": [-3, -3, -0.2, 3, 3, 1.8], "bev_stride": 4}
    det |= {"neck_channels": 8, "head_channels": 8}
    kinds = {
        "classify": (CLASSIFIER_KIND, "e3dsnn_t", {**TINY, "out_dim": 2}, ["cup", "lamp"]),
        "segment": (SEGMENTER_KIND, "e3dsnn_unet_t", {**TINY, "num_classes": 2}, ["floor", "chair"]),
        "detect": (DETECTOR_KIND, "e3dsnn_det_t", det, ["object"]),
    }
    out = {}
    for cmd, (kind, name, cfg, names) in kinds.items():
        net = create_model(name, **cfg)
        meta = {"kind": kind, "model": name, "model_cfg": cfg, "class_names": names}
        out[cmd] = save_checkpoint(d / f"{cmd}.safetensors", dict(net.state_dict()), meta)
    return out


@pytest.fixture
def scans(tmp_path: Path) -> dict[str, Path]:
    """Two good scans with one name in two sequences (SemanticKITTI layout) and a bad file between."""
    rng = np.random.default_rng(0)
    files = {}
    for seq in ("08", "09"):
        f = tmp_path / "seqs" / seq / "velodyne" / "000000.npy"
        f.parent.mkdir(parents=True)
        np.save(f, (rng.random((300, 3)) * 4 - 2).astype(np.float32))
        files[seq] = f
    files["bad"] = tmp_path / "seqs" / "bad.npy"
    np.save(files["bad"], np.zeros(7, np.float32))  # not (N, 3)
    return files


@pytest.mark.parametrize("cmd", ["segment", "detect"])
def test_one_bad_file_among_good_ones_loses_nothing_and_outputs_never_collide(
    cmd, ckpts, scans, tmp_path, run_cli
):
    out = tmp_path / "out"
    files = [scans["08"], scans["bad"], scans["09"]]
    code, stdout, err = run_cli(cmd, "--checkpoint", ckpts[cmd], *files, "-o", out)
    assert code == 2
    lines = stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(scans["08"])) and lines[1].startswith(str(scans["09"]))
    errors = [e for e in err.splitlines() if e.startswith("svl: error:")]
    assert errors == [e for e in errors if e.startswith(f"svl: error: {scans['bad']}")] and len(errors) == 1
    assert err.splitlines()[-1] == "svl: 1 of 3 files failed"
    assert "Traceback" not in err
    suffixes = (".ply", ".npy", ".png") if cmd == "segment" else (".json", ".png")
    want = {f"{seq}/velodyne/000000{s}" for seq in ("08", "09") for s in suffixes}
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == want
    for seq in ("08", "09"):  # each output is its own scan's, named in the line printed for it
        first = out / seq / "velodyne" / f"000000{suffixes[0]}"
        assert str(first) in stdout
        if cmd == "detect":
            assert json.loads(first.read_text())["file"] == str(scans[seq])
        else:
            assert len(np.load(first.with_suffix(".npy"))) == 300


@pytest.mark.parametrize("cmd", ["segment", "detect"])
def test_json_lists_good_files_and_failures(cmd, ckpts, scans, tmp_path, run_cli):
    files = [scans["08"], tmp_path / "missing.npy", scans["09"]]
    code, stdout, err = run_cli(cmd, "--checkpoint", ckpts[cmd], *files, "-o", tmp_path / "out", "--json")
    assert code == 2
    results = json.loads(stdout)
    assert [r["file"] for r in results] == [str(f) for f in files]
    assert ["error" in r for r in results] == [False, True, False]
    assert "missing.npy" in results[1]["error"] or "no such file" in results[1]["error"]
    assert err.splitlines()[-1] == "svl: 1 of 3 files failed"


def test_classify_goes_on_past_bad_files(ckpts, scans, tmp_path, run_cli):
    files = [scans["08"], scans["bad"], tmp_path / "missing.npy", scans["09"]]
    code, stdout, err = run_cli("classify", "--checkpoint", ckpts["classify"], *files)
    assert code == 2
    lines = stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines] == [str(scans["08"]), str(scans["09"])]
    errors = [e for e in err.splitlines() if e.startswith("svl: error:")]
    assert len(errors) == 2
    assert errors[0].startswith(f"svl: error: {scans['bad']}")
    assert errors[1].startswith(f"svl: error: {tmp_path / 'missing.npy'}")
    assert err.splitlines()[-1] == "svl: 2 of 4 files failed"
    code, stdout, _ = run_cli("classify", "--checkpoint", ckpts["classify"], "--json", *files)
    assert code == 2 and [("error" in r) for r in json.loads(stdout)] == [False, True, True, False]
    code, stdout, err = run_cli("classify", "--checkpoint", ckpts["classify"], scans["08"], scans["09"])
    assert code == 0 and len(stdout.splitlines()) == 2 and "failed" not in err


def test_one_bad_file_alone_is_one_error_line(ckpts, scans, tmp_path, run_cli):
    code, stdout, err = run_cli(
        "segment", "--checkpoint", ckpts["segment"], scans["bad"], "-o", tmp_path / "o"
    )
    assert code == 2 and stdout == ""
    assert err.splitlines() == [err.strip()] and err.startswith(f"svl: error: {scans['bad']}")


@pytest.mark.parametrize("cmd", ["segment", "detect"])
def test_output_folder_that_is_a_file_is_one_error_line(cmd, ckpts, scans, tmp_path, run_cli):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine\n")
    code, stdout, err = run_cli(cmd, "--checkpoint", ckpts[cmd], scans["08"], "-o", taken)
    assert code == 2 and stdout == ""
    assert err.strip() == f"svl: error: output folder {taken} is an existing file; give a folder with -o"
    assert taken.read_text() == "mine\n"
    code, _, err = run_cli(cmd, "--checkpoint", ckpts[cmd], scans["08"], "-o", taken / "sub")
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("svl: error:") and "taken.txt" in err


def test_an_output_never_overwrites_an_input(ckpts, scans, run_cli):
    """`svl segment x.npy -o <its own folder>` would replace x.npy by its labels: refused, nothing written."""
    folder = scans["08"].parent
    before = scans["08"].read_bytes()
    code, _, err = run_cli("segment", "--checkpoint", ckpts["segment"], scans["08"], "-o", folder)
    assert code == 2 and "would overwrite an input file" in err and len(err.splitlines()) == 1
    assert scans["08"].read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["000000.npy"]


def test_output_paths_by_relative_path_and_whole_names_for_shared_stems(tmp_path):
    from svl.infer.files import output_paths

    one = output_paths([tmp_path / "a" / "scan.bin"], tmp_path / "o", (".json",))
    assert one == [{".json": tmp_path / "o" / "scan.json"}]
    seqs = [tmp_path / "kitti" / s / "velodyne" / "000000.bin" for s in ("00", "08")]
    got = [p[".json"] for p in output_paths(seqs, tmp_path / "o", (".json",))]
    assert got == [tmp_path / "o" / s / "velodyne" / "000000.json" for s in ("00", "08")]
    same_stem = [tmp_path / "d" / "scan.ply", tmp_path / "d" / "scan.bin", tmp_path / "d" / "x.pcd.bin"]
    got = [p[".png"].name for p in output_paths(same_stem, tmp_path / "o", (".png",))]
    assert got == ["scan.ply.png", "scan.bin.png", "x.pcd.png"]
    twice = output_paths([tmp_path / "s.bin", tmp_path / "s.bin"], tmp_path / "o", (".json",))
    assert twice[0] == twice[1]  # the same file given twice is not a collision


def test_each_file_raises_by_default_and_reports_on_request(tmp_path):
    from svl.infer.files import each_file
    from svl.utils import DiskFullError

    def work(i, p):
        if p == "bad":
            raise ValueError("unreadable")
        return {"file": p, "i": i}

    with pytest.raises(ValueError, match="unreadable"):
        each_file(["a", "bad", "b"], work)
    got = each_file(["a", "bad", "b"], work, errors="report")
    assert got == [{"file": "a", "i": 0}, {"file": "bad", "error": "unreadable"}, {"file": "b", "i": 2}]

    def full(i, p):
        raise DiskFullError(tmp_path / "x", 10, 0, False, "no space left on device")

    with pytest.raises(DiskFullError):  # a full disk stops: every later file would fail the same way
        each_file(["a", "b"], full, errors="report")
