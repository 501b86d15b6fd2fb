"""Voxelization against a plain-Python reference, on random and real ModelNet40 points."""

import numpy as np
import pytest
import torch

from svl.sparse import SubMConv3d, voxelize


def reference(xyz, feats, batch, vs):
    groups = {}
    for p in range(len(xyz)):
        key = (int(batch[p]),) + tuple(int(np.floor(v)) for v in xyz[p].astype(np.float64) / vs)
        groups.setdefault(key, []).append(p)
    keys = sorted(groups)
    return keys, [feats[groups[k]].mean(0) for k in keys], groups


def check_against_reference(xyz, feats, batch, vs):
    st, p2v = voxelize(torch.from_numpy(xyz), torch.from_numpy(feats), torch.from_numpy(batch), vs)
    keys, means, groups = reference(xyz, feats, batch, vs)
    assert keys, "no points: nothing would be compared"
    assert [tuple(c) for c in st.coords.tolist()] == keys
    np.testing.assert_allclose(st.features.numpy(), np.stack(means), rtol=1e-5, atol=1e-6)
    for i, k in enumerate(keys):
        assert set(np.nonzero(p2v.numpy() == i)[0].tolist()) == set(groups[k])
    return st


def test_random_points_match_reference():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (600, 3)).astype(np.float32)
    feats = rng.normal(size=(600, 4)).astype(np.float32)
    batch = rng.integers(0, 3, 600)
    st = check_against_reference(xyz, feats, batch, 0.25)
    assert st.batch_size == 3 and st.stride == 1


def test_real_modelnet_clouds(modelnet_clouds):
    pts = modelnet_clouds(3)[0].numpy()
    xyz = pts.reshape(-1, 3)
    batch = np.repeat(np.arange(3), pts.shape[1])
    st = check_against_reference(xyz, xyz.copy(), batch, 0.05)
    assert 0 < st.num_sites < len(xyz)
    out = SubMConv3d(3, 8)(st)  # the voxelized cloud flows into a conv
    assert out.features.shape == (st.num_sites, 8)


def test_gradient_reaches_point_features_and_scatter_back():
    xyz = torch.tensor([[0.01, 0.01, 0.01], [0.02, 0.03, 0.01], [0.5, 0.5, 0.5]])
    feats = torch.randn(3, 2, requires_grad=True)
    st, p2v = voxelize(xyz, feats, torch.zeros(3, dtype=torch.long), 0.1, batch_size=2)
    assert st.batch_size == 2 and st.num_sites == 2
    assert p2v.tolist() == [0, 0, 1]
    st.features[p2v].sum().backward()  # site values scattered back to points
    torch.testing.assert_close(feats.grad, torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]))


def test_anisotropic_and_empty():
    xyz = torch.tensor([[0.15, 0.15, 0.15]])
    st, _ = voxelize(xyz, xyz, torch.zeros(1, dtype=torch.long), (0.1, 0.2, 0.05))
    assert st.coords.tolist() == [[0, 1, 0, 3]]
    st, p2v = voxelize(
        torch.zeros(0, 3), torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), 0.1, batch_size=2
    )
    assert st.num_sites == 0 and st.features.shape == (0, 5) and p2v.numel() == 0


@pytest.mark.parametrize(
    "xyz,vs,batch,bs,match",
    [
        ([[float("nan"), 0, 0]], 0.1, [0], None, "NaN or inf"),
        ([[float("inf"), 0, 0]], 0.1, [0], None, "NaN or inf"),
        ([[0, 0, 0]], -0.1, [0], None, "voxel_size"),
        ([[0, 0, 0]], 0.0, [0], None, "voxel_size"),
        ([[0, 0, 0]], (0.1, 0.1), [0], None, "voxel_size"),
        ([[0, 0, 0]], 0.1, [2], 2, "batch_size=2"),
        ([[0, 0, 0]], 0.1, [-1], None, "negative batch"),
        ([[1e30, 0, 0]], 1e-12, [0], None, "exceed"),
    ],
)
def test_bad_inputs(xyz, vs, batch, bs, match):
    x = torch.tensor(xyz, dtype=torch.float32)
    with pytest.raises(ValueError, match=match):
        voxelize(x, torch.zeros(len(xyz), 1), torch.tensor(batch), vs, batch_size=bs)


def test_shape_mismatches():
    with pytest.raises(ValueError, match="feats"):
        voxelize(torch.zeros(4, 3), torch.zeros(3, 1), torch.zeros(4, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="batch"):
        voxelize(torch.zeros(4, 3), torch.zeros(4, 1), torch.zeros(3, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="xyz"):
        voxelize(torch.zeros(4, 2), torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), 0.1)
