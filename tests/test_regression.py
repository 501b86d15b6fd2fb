"""Pinned numerics: no refactor may silently change what the encoder computes.

`tests/data/e3dsnn_t_pinned.npz` was written by svl 0.x before the tasks-layer restructuring:
E-3DSNN-T built under seed 0 (out_dim 384) applied to four fixed real ModelNet40 test clouds
(indices 0, 100, 1000, 2000, 1,024 points each through the dataset's default test pipeline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from svl.data import build_dataset, collate_points
from svl.models import create_model
from svl.spiking import set_spike_mode

PINNED = Path(__file__).with_name("data") / "e3dsnn_t_pinned.npz"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("e3dsnn_t", out_dim=384).eval()


def test_pinned_inputs_come_from_the_dataset_pipeline(shared_data: Path) -> None:
    ref = np.load(PINNED)
    ds = build_dataset("modelnet40", "test", root=shared_data, num_points=1024)
    batch = collate_points([ds[int(i)] for i in ref["indices"]])
    np.testing.assert_allclose(batch.xyz.numpy(), ref["xyz"], atol=1e-6, rtol=0)


def test_e3dsnn_t_outputs_match_pinned_values() -> None:
    ref = np.load(PINNED)
    batch = collate_points([{"xyz": x, "label": 0, "index": i} for i, x in enumerate(ref["xyz"])])
    model = _model()
    with torch.no_grad():
        out = model(batch).numpy()
        set_spike_mode(model, "binary")
        out_binary = model(batch).numpy()
    assert out.shape == ref["out"].shape == (4, 384)
    np.testing.assert_allclose(out, ref["out"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out_binary, ref["out"], atol=1e-5, rtol=0)
