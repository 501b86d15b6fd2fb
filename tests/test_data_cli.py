"""`svl data info` / `svl data render` end to end."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from test_data_io import write_ply

from svl.cli import main


def test_data_info_file_and_dataset(tmp_path, capsys, shared_data):
    p = write_ply(tmp_path / "a.ply", "binary_little_endian", rgb=True)
    assert main(["data", "info", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_points"] == 50 and info["channels"] == ["xyz", "rgb"] and info["rgb_range"] == "[0, 1]"
    assert main(["data", "info", "modelnet40_zsl:test_unseen"]) == 0
    out = capsys.readouterr().out
    assert "908 samples" in out and "night_stand" in out
    assert main(["data", "info", str(tmp_path / "nope.ply")]) == 2
    assert "nope.ply" in capsys.readouterr().err


def test_data_render(tmp_path, capsys):
    p = write_ply(tmp_path / "a.ply", "ascii", rgb=True)
    out = tmp_path / "view.png"
    assert main(["data", "render", str(p), "-o", str(out), "--views", "3", "--size", "64"]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape[0] >= 64 and img.shape[1] >= 3 * 64
    assert img.std() > 5  # something was drawn on the white background
