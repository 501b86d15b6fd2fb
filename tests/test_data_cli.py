"""`svl data info` / `svl data render` end to end."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image


def test_data_info_file_and_dataset(tmp_path, monkeypatch, run_cli, write_ply, shared_data):
    monkeypatch.setenv("SVL_DATA", str(shared_data))  # the command finds datasets itself: point it here
    p = write_ply(tmp_path / "a.ply", "binary_little_endian", rgb=True)
    code, out, _ = run_cli("data", "info", p, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["num_points"] == 50 and info["channels"] == ["xyz", "rgb"] and info["rgb_range"] == "[0, 1]"
    code, out, _ = run_cli("data", "info", "modelnet40_zsl:test_unseen")
    assert code == 0
    assert "908 samples" in out and "night_stand" in out
    code, _, err = run_cli("data", "info", tmp_path / "nope.ply")
    assert code == 2 and "nope.ply" in err


def test_data_render(tmp_path, run_cli, write_ply):
    p = write_ply(tmp_path / "a.ply", "ascii", rgb=True)
    out = tmp_path / "view.png"
    assert run_cli("data", "render", p, "-o", out, "--views", "3", "--size", "64")[0] == 0
    img = np.asarray(Image.open(out))
    assert img.shape[0] >= 64 and img.shape[1] >= 3 * 64
    assert img.std() > 5  # something was drawn on the white background
