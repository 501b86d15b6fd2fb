"""Sparse convs, BN and pooling against dense torch references (conv3d / conv_transpose3d)."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from svl.sparse import (
    SparseBatchNorm,
    SparseConv3d,
    SparseInverseConv3d,
    SparseLinear,
    SparseTensor,
    SubMConv3d,
    global_max_pool,
    global_mean_pool,
    submanifold_map,
)
from svl.spiking.neuron import SpikeTrain

PAD = 4  # margin (multiple of every stride used) so dense outputs cover every sparse output site


def to_dense(coords, feats, batch, grid):
    """Scatter (N, C) site features into a dense (B, C, G+2*PAD, ...) grid, differentiably."""
    c = feats.shape[1]
    size = grid + 2 * PAD
    dense = feats.new_zeros((batch, size, size, size, c))
    dense = dense.index_put((coords[:, 0], coords[:, 1] + PAD, coords[:, 2] + PAD, coords[:, 3] + PAD), feats)
    return dense.permute(0, 4, 1, 2, 3)


def at_sites(dense, coords, shift):
    return dense[coords[:, 0], :, coords[:, 1] + shift, coords[:, 2] + shift, coords[:, 3] + shift]


def dense_weight(w, k):
    """(K^3, cin, cout) -> conv3d's (cout, cin, K, K, K)."""
    return w.view(k, k, k, w.shape[1], w.shape[2]).permute(4, 3, 0, 1, 2)


def grads(out, ref, *leaves):
    r = torch.randn_like(ref)
    g1 = torch.autograd.grad((out * r).sum(), leaves)
    g2 = torch.autograd.grad((ref * r).sum(), leaves)
    return g1, g2


@pytest.mark.parametrize("k", [3, 5])
def test_submanifold_matches_dense_conv3d(k, random_sites):
    torch.manual_seed(1)
    coords = random_sites()
    f = torch.randn(len(coords), 3, dtype=torch.float64, requires_grad=True)
    conv = SubMConv3d(3, 4, kernel_size=k).double()
    out = conv(SparseTensor(f, coords, 2))
    assert out.coords is coords
    dense = F.conv3d(to_dense(coords, f, 2, 7), dense_weight(conv.weight, k), padding=k // 2)
    ref = at_sites(dense, coords, PAD)
    torch.testing.assert_close(out.features, ref)
    g1, g2 = grads(out.features, ref, f, conv.weight)
    torch.testing.assert_close(g1[0], g2[0])
    torch.testing.assert_close(g1[1], g2[1])


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (3, 1)])
def test_strided_matches_dense_conv3d(k, s, random_sites):
    torch.manual_seed(2)
    coords = random_sites(seed=3)
    f = torch.randn(len(coords), 3, dtype=torch.float64, requires_grad=True)
    conv = SparseConv3d(3, 5, kernel_size=k, stride=s, bias=True).double()
    st = SparseTensor(f, coords, 2)
    out = conv(st)
    assert out.stride == s
    dense_in = to_dense(coords, f, 2, 7)
    dense = F.conv3d(dense_in, dense_weight(conv.weight, k), conv.bias, stride=s)
    # The output sites are exactly the dense positions whose window touches an active site.
    occupancy = to_dense(coords, torch.ones(len(coords), 1), 2, 7)
    support = F.conv3d(occupancy, torch.ones(1, 1, k, k, k), stride=s) > 0
    expect = support[:, 0].nonzero()
    expect[:, 1:] -= PAD // s
    assert torch.equal(out.coords, expect)  # also checks the (b, x, y, z) sort order
    ref = at_sites(dense, out.coords, PAD // s)
    torch.testing.assert_close(out.features, ref)
    g1, g2 = grads(out.features, ref, f, conv.weight, conv.bias)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2)])
def test_inverse_matches_conv_transpose3d_and_restores_sites(k, s, random_sites):
    torch.manual_seed(4)
    coords = random_sites(seed=5)
    st = SparseTensor(torch.randn(len(coords), 3, dtype=torch.float64), coords, 2)
    down = SparseConv3d(3, 4, k, s).double()(st)
    x = down.features.detach().requires_grad_(True)
    up = SparseInverseConv3d(4, 2, k, s).double()
    out = up(down.replace(features=x))
    assert out.coords is coords and out.stride == 1
    dense_coarse = to_dense(down.coords + torch.tensor([0, 0, 0, 0]), x, 2, 7)
    # conv_transpose3d weight is (cin, cout, K, K, K) and weight[k] equals [:, :, kx, ky, kz].
    wt = up.weight.view(k, k, k, 4, 2).permute(3, 4, 0, 1, 2)
    dense = F.conv_transpose3d(dense_coarse, wt, stride=s)
    ref = at_sites(dense, coords, PAD * s)
    torch.testing.assert_close(out.features, ref)
    g1, g2 = grads(out.features, ref, x, up.weight)
    torch.testing.assert_close(g1[0], g2[0])
    torch.testing.assert_close(g1[1], g2[1])


def test_inverse_without_matching_strided_conv_raises(random_sites):
    coords = random_sites()
    st = SparseTensor(torch.randn(len(coords), 3), coords, 2, stride=2)
    with pytest.raises(ValueError, match="no strided conv"):
        SparseInverseConv3d(3, 3)(st)


def _unet(c=4):
    torch.manual_seed(7)
    return nn.ModuleList(
        [
            SubMConv3d(3, c),
            SparseConv3d(c, c),
            SubMConv3d(c, c),
            SparseInverseConv3d(c, c),
            SparseLinear(c, 2),
        ]
    )


def _run(layers, st):
    for m in layers:
        st = m(st)
    return st


def test_samples_never_interact_and_stack_restores_sites(random_sites):
    torch.manual_seed(8)
    coords = random_sites(batch=3, seed=9)
    f = torch.randn(len(coords), 3)
    layers = _unet()
    full = _run(layers, SparseTensor(f, coords, 3))
    assert torch.equal(full.coords, coords)
    for b in range(3):
        m = coords[:, 0] == b
        sub = coords[m].clone()
        sub[:, 0] = 0
        alone = _run(layers, SparseTensor(f[m], sub, 1))
        torch.testing.assert_close(full.features[m], alone.features, rtol=1e-5, atol=1e-6)


def test_empty_and_single_voxel_samples():
    coords = torch.tensor([[0, 3, 3, 3], [2, 0, 0, 0], [2, 1, 0, 0]])
    f = torch.randn(3, 3)
    st = SparseTensor(f, coords, 4)  # samples 1 and 3 are empty
    out = _run(_unet(), st)
    assert out.features.shape == (3, 2) and torch.isfinite(out.features).all()
    pooled = global_mean_pool(out)
    assert pooled.shape == (4, 2)
    assert torch.equal(pooled[1], torch.zeros(2)) and torch.equal(pooled[3], torch.zeros(2))
    torch.testing.assert_close(pooled[0], out.features[0])
    # A fully empty batch flows through as well.
    empty = _run(_unet(), SparseTensor(torch.zeros(0, 3), torch.zeros(0, 4, dtype=torch.long), 2))
    assert empty.features.shape == (0, 2)
    assert torch.equal(global_max_pool(empty), torch.zeros(2, 2))


@pytest.mark.parametrize("far", [2**40, 2**61])
def test_very_large_coordinates(far, random_sites):
    """Huge offsets (packed after shifting) and huge spreads (exact fallback) give the same result."""
    coords = random_sites(batch=1, seed=11)
    f = torch.randn(len(coords), 3)
    layers = _unet()
    ref = _run(layers, SparseTensor(f, coords, 1)).features
    shifted = coords + torch.tensor([0, far, -far, far])  # multiples of 2 keep the stride-2 grid alignment
    torch.testing.assert_close(_run(layers, SparseTensor(f, shifted, 1)).features, ref)
    # Two copies, one near the origin and one far away: the spread does not fit in a packed key.
    both = torch.cat([coords, shifted])
    out = _run(layers, SparseTensor(torch.cat([f, f]), both, 1)).features
    torch.testing.assert_close(out, torch.cat([ref, ref]))


def test_kernel_map_cached_and_counts_pairs(random_sites):
    coords = random_sites(seed=12)
    st = SparseTensor(torch.randn(len(coords), 3), coords, 2)
    a, b = SubMConv3d(3, 4), SubMConv3d(4, 4)
    y = a(st)
    assert b.kernel_map(y) is a.kernel_map(st)
    km = a.kernel_map(st)
    # Brute force: ordered pairs of sites of one sample within Chebyshev distance 1.
    d = (coords[:, None, 1:] - coords[None, :, 1:]).abs().max(-1).values
    same = coords[:, None, 0] == coords[None, :, 0]
    assert km.n_pairs == int(((d <= 1) & same).sum())
    assert km.n_in == km.n_out == len(coords)
    offs = list(itertools.product(range(3), repeat=3))
    assert len(km.in_idx) == len(km.out_idx) == len(offs) == 27
    for k, (i, o) in enumerate(zip(km.in_idx, km.out_idx, strict=True)):
        delta = torch.tensor(offs[k]) - 1
        assert torch.equal(coords[i, 1:] - coords[o, 1:], delta.expand(len(i), 3))
        assert torch.equal(coords[i, 0], coords[o, 0])
    # Maps at a coarser stride are separate entries, and the strided map is reused too.
    down = SparseConv3d(3, 3)
    assert down.kernel_map(st) is down.kernel_map(st)
    assert SubMConv3d(3, 3).kernel_map(down(st)) is not km


def test_step_dims_and_spike_trains(random_sites):
    torch.manual_seed(13)
    coords = random_sites(seed=14)
    n = len(coords)
    conv = SparseConv3d(3, 4, bias=True)
    x = torch.randn(2, n, 3)  # (T, N, C)
    out = conv(SparseTensor(x, coords, 2)).features
    for t in range(2):
        torch.testing.assert_close(out[t], conv(SparseTensor(x[t], coords, 2)).features)
    counts = torch.randint(0, 5, (2, n, 3)).float()
    train = SpikeTrain.from_counts(counts, 4)
    for m in (conv, SubMConv3d(3, 4, bias=True), SparseLinear(3, 4)):
        got = m(SparseTensor(train, coords, 2)).features
        torch.testing.assert_close(got, m(SparseTensor(counts, coords, 2)).features, rtol=1e-5, atol=1e-5)
    up = SparseInverseConv3d(4, 2, bias=True)
    coarse = conv(SparseTensor(counts, coords, 2))
    spikes = SpikeTrain.from_counts(coarse.features.detach().round().clamp(0, 4), 4)
    torch.testing.assert_close(
        up(coarse.replace(features=spikes)).features,
        up(coarse.replace(features=spikes.bits.sum(0))).features,
        rtol=1e-5,
        atol=1e-5,
    )


def test_batchnorm_and_linear_match_torch():
    torch.manual_seed(15)
    f = torch.randn(3, 50, 6)
    coords = torch.stack(
        [torch.arange(50) % 2, torch.arange(50), torch.zeros(50).long(), torch.zeros(50).long()], 1
    )
    st = SparseTensor(f, coords, 2)
    bn = SparseBatchNorm(6)
    ref = nn.BatchNorm1d(6, eps=1e-3, momentum=0.01)
    torch.testing.assert_close(bn(st).features, ref(f.reshape(-1, 6)).view(3, 50, 6))
    torch.testing.assert_close(bn.bn.running_mean, ref.running_mean)
    lin = SparseLinear(6, 4)
    assert lin.weight.shape == (1, 6, 4)
    torch.testing.assert_close(lin(st).features, f @ lin.weight[0] + lin.bias)
    seq = nn.Sequential(SubMConv3d(6, 4), SparseBatchNorm(4), SparseLinear(4, 2))
    assert seq(st).features.shape == (3, 50, 2)


def test_pooling_matches_loops_and_backprops(random_sites):
    torch.manual_seed(16)
    coords = random_sites(batch=3, seed=17)
    f = torch.randn(2, len(coords), 5, requires_grad=True)
    st = SparseTensor(f, coords, 3)
    mean, mx = global_mean_pool(st), global_max_pool(st)
    assert mean.shape == mx.shape == (2, 3, 5)
    for b in range(3):
        m = coords[:, 0] == b
        torch.testing.assert_close(mean[:, b], f[:, m].mean(1))
        torch.testing.assert_close(mx[:, b], f[:, m].amax(1))
    (mx.sum() + mean.sum()).backward()
    assert torch.isfinite(f.grad).all() and (f.grad != 0).any()


def test_bad_inputs_raise_value_errors(random_sites):
    coords = random_sites()
    with pytest.raises(ValueError, match="batch_size"):
        SparseTensor(torch.randn(len(coords), 3), coords, 1)
    with pytest.raises(ValueError, match="int64"):
        SparseTensor(torch.randn(len(coords), 3), coords.int(), 2)
    with pytest.raises(ValueError, match="sites"):
        SparseTensor(torch.randn(len(coords) + 1, 3), coords, 2)
    st = SparseTensor(torch.randn(len(coords), 3), coords, 2)
    with pytest.raises(ValueError, match="channels"):
        SubMConv3d(4, 4)(st)
    with pytest.raises(ValueError, match="odd kernel"):
        submanifold_map(coords, 2)
