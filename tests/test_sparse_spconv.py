"""Parity of the optional spconv backend with svl's own sparse convs (skipped without spconv)."""

import pytest
import torch

from svl.sparse import SparseConv3d, SparseInverseConv3d, SparseTensor, SubMConv3d

pytest.importorskip("spconv.pytorch")

from svl.sparse.spconv_backend import (  # noqa: E402
    SpconvInverseConv3d,
    SpconvSparseConv3d,
    SpconvSubMConv3d,
    from_spconv_weight,
    to_spconv_weight,
)

# sites in [-4, 5]: negative coordinates must work too
GRID = {"batch": 2, "grid": 10, "p": 0.25, "offset": 4}


def test_weight_layout_round_trip():
    w = torch.randn(27, 3, 5)
    sw = to_spconv_weight(w)
    assert sw.shape == (5, 3, 3, 3, 3)
    assert torch.equal(sw[:, 1, 2, 0, :], w[1 * 9 + 2 * 3 + 0].T)
    assert torch.equal(from_spconv_weight(sw), w)


def test_stack_parity_outputs_and_grads_with_two_threads(random_sites):
    """With 2 torch threads (where raw spconv CPU is wrong) the backend still matches svl exactly."""
    torch.manual_seed(1)
    coords = random_sites(**GRID)
    ours = [SubMConv3d(3, 4), SparseConv3d(4, 5, 3, 2), SubMConv3d(5, 5), SparseInverseConv3d(5, 2, 3, 2)]
    theirs = [SpconvSubMConv3d(3, 4), SpconvSparseConv3d(4, 5, 3, 2), SpconvSubMConv3d(5, 5)]
    theirs.append(SpconvInverseConv3d(5, 2, 3, 2))
    for a, b in zip(ours, theirs, strict=True):
        a.double()
        b.double().load_state_dict(a.state_dict())
    f = torch.randn(len(coords), 3, dtype=torch.float64)
    fa, fb = f.clone().requires_grad_(True), f.clone().requires_grad_(True)
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        xa, xb = SparseTensor(fa, coords, 2), SparseTensor(fb, coords, 2)
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            xa, xb = a(xa), b(xb)
            assert torch.get_num_threads() == 2  # restored after the forward
            if i == 1:  # spconv may order the coarse sites differently: compare by coordinate
                pos = {tuple(c): j for j, c in enumerate(xa.coords.tolist())}
                perm = torch.tensor([pos[tuple(c)] for c in xb.coords.tolist()])
                assert len(perm) == len(xa.coords)
                torch.testing.assert_close(xb.features, xa.features[perm])
        assert xb.coords is coords
        torch.testing.assert_close(xb.features, xa.features)
        r = torch.randn_like(xa.features)
        (xa.features * r).sum().backward()
        (xb.features * r).sum().backward()
        assert torch.get_num_threads() == 2  # restored after the backward
    finally:
        torch.set_num_threads(prev)
    torch.testing.assert_close(fb.grad, fa.grad)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(b.weight.grad, a.weight.grad)


def test_step_dims_and_inverse_without_strided_conv(random_sites):
    coords = random_sites(**GRID, seed=2)
    x = torch.randn(2, len(coords), 3)
    a, b = SubMConv3d(3, 4, bias=True), SpconvSubMConv3d(3, 4, bias=True)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(SparseTensor(x, coords, 2)).features, a(SparseTensor(x, coords, 2)).features)
    with pytest.raises(ValueError, match="no SpconvSparseConv3d"):
        SpconvInverseConv3d(3, 3)(SparseTensor(x[0], coords, 2, stride=2))
