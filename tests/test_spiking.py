"""I-LIF neuron: closed-form dynamics, straight-through gradients, integer vs spike-driven equivalence."""

from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

from svl.spiking import (
    ILIF,
    FeatureBatchNorm,
    SConv2d,
    SLinear,
    SpikeTrain,
    StepBatchNorm2d,
    as_tensor,
    make_neuron,
    quantize,
    record_spikes,
    set_spike_mode,
    spike_stats,
)


def test_quantize_values_and_straight_through_gradient():
    u = torch.tensor([-1.0, 0.2, 0.5, 1.49, 2.51, 3.9, 4.0, 7.0], requires_grad=True)
    s = quantize(u, 4)
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 3.0, 4.0, 4.0, 4.0]
    s.sum().backward()
    assert u.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_multistep_dynamics_match_hand_computed_sequence():
    # u0=1.3 -> s=1; u1=.25*(1.3-1)+.6=.675 -> 1; u2=.25*(.675-1)+2.7=2.61875 -> 3;
    # u3=.25*(2.61875-3)-.5=-.5953125 -> 0; u4=.25*(-.5953125)+5=4.8512 -> 4 (clamped)
    x = torch.tensor([1.3, 0.6, 2.7, -0.5, 5.0]).view(5, 1).requires_grad_()
    s = ILIF(D=4, T=5, beta=0.25)(x)
    assert s.view(-1).tolist() == [1.0, 1.0, 3.0, 0.0, 4.0]
    # Reset detached: d mem[t] / d x[t'] = beta^(t-t'); STE mask is 1 at t = 0, 1, 2 only.
    s.sum().backward()
    torch.testing.assert_close(x.grad.view(-1), torch.tensor([1.3125, 1.25, 1.0, 0.0, 0.0]))


def test_time_dim_checked():
    with pytest.raises(ValueError, match="time as the first dim"):
        ILIF(T=4)(torch.randn(3, 8))


def test_spike_train_roundtrip_and_max_commutes():
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (6, 7), generator=g).float()
    st = SpikeTrain.from_counts(s, 4)
    assert st.bits.shape == (4, 6, 7)
    assert set(st.bits.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(st.count(), s)
    assert torch.equal(st.map(lambda b: b.amax(-2)).count(), s.amax(-2))


class _Block(nn.Module):
    """Linear -> BN with the residual added to the membrane (pre-spike) value."""

    def __init__(self, c: int, T: int):
        super().__init__()
        self.sn = ILIF(D=4, T=T)
        self.fc = SLinear(c, c, bias=False)
        self.bn = FeatureBatchNorm(c)

    def forward(self, u):
        return self.bn(self.fc(self.sn(u))) + u


def _net(T: int, c: int = 16, depth: int = 3, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        SLinear(8, c),
        *[_Block(c, T) for _ in range(depth)],
        ILIF(D=4, T=T),
        SLinear(c, classes),
    )
    return net.eval()


def _compare(net: nn.Module, x: torch.Tensor) -> float:
    set_spike_mode(net, "integer")
    y_int = net(x)
    set_spike_mode(net, "binary")
    y_bin = net(x)
    set_spike_mode(net, "integer")
    assert torch.equal(y_int.argmax(-1), y_bin.argmax(-1))
    diff = (y_int - y_bin).abs().max().item()
    assert diff <= 1e-5
    return diff


def test_single_layer_integer_equals_binary():
    torch.manual_seed(1)
    layer = nn.Sequential(ILIF(D=4), SLinear(32, 10))
    x = torch.randn(64, 32) * 2
    _compare(layer, x)
    # The binary pass really feeds 0/1 values to the synaptic layer.
    set_spike_mode(layer, "binary")
    out = layer[0](x)
    assert isinstance(out, SpikeTrain) and out.bits.shape == (4, 64, 32)
    assert set(out.bits.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("T", [1, 2, 4])
def test_residual_network_integer_equals_binary(T):
    net = _net(T)
    x = torch.randn(T, 128, 8) * 3 if T > 1 else torch.randn(128, 8) * 3
    _compare(net, x)


def test_conv_network_integer_equals_binary_multistep():
    torch.manual_seed(2)
    T = 3
    net = nn.Sequential(
        SConv2d(3, 8, 3, padding=1, bias=False),
        StepBatchNorm2d(8),
        ILIF(T=T),
        SConv2d(8, 8, 3, padding=1),
        ILIF(T=T),
        nn.Flatten(2),
        SLinear(8 * 6 * 6, 4),
    ).eval()
    x = torch.randn(T, 5, 3, 6, 6) * 2
    # Flatten cannot see a SpikeTrain; count-preserving reshapes go through SpikeTrain.map.
    net[5] = _Flatten()
    _compare(net, x)


class _Flatten(nn.Module):
    def forward(self, x):
        if isinstance(x, SpikeTrain):
            return x.map(lambda b: b.flatten(-3))
        return x.flatten(-3)


@dataclass
class _Sparse:
    features: torch.Tensor
    coords: torch.Tensor

    def replace(self, **kw):
        return replace(self, **kw)


def test_neuron_acts_on_sparse_feature_matrices():
    st = _Sparse(torch.tensor([[0.4, 2.6], [9.0, -1.0]]), torch.zeros(2, 4, dtype=torch.long))
    out = ILIF(D=4)(st)
    assert isinstance(out, _Sparse) and out.features.tolist() == [[0.0, 3.0], [4.0, 0.0]]
    relu = make_neuron("relu")(st)
    assert torch.equal(relu.features, st.features.clamp(min=0))


def test_spike_accounting_firing_rates():
    net = nn.Sequential(ILIF(D=4), SLinear(4, 4), ILIF(D=4))
    x = torch.tensor([[0.0, 1.0, 2.2, 9.0]])
    assert spike_stats(net) == {}
    record_spikes(net)
    net(x)
    stats = spike_stats(net)
    assert stats["0"] == {"spikes": 7.0, "neurons": 4.0, "rate": 1.75}
    assert set(stats) == {"0", "2"}
    record_spikes(net, False)
    assert spike_stats(net) == {}


def test_ann_twin_and_bad_arguments():
    assert torch.equal(make_neuron("relu")(torch.tensor([-1.0, 2.5])), torch.tensor([0.0, 2.5]))
    with pytest.raises(ValueError, match="unknown neuron kind"):
        make_neuron("lif")
    with pytest.raises(ValueError, match="unknown spike mode"):
        set_spike_mode(nn.Sequential(ILIF()), "ternary")
    with pytest.raises(TypeError, match="not spikes"):
        ILIF()(SpikeTrain.from_counts(torch.ones(2), 4))
    assert torch.equal(as_tensor(SpikeTrain.from_counts(torch.tensor([3.0]), 4)), torch.tensor([3.0]))


def test_matches_spikingjelly_ilif_multistep():
    """Against SpikingJelly's ILIFNode (integer firing, soft reset), when it is installed (--no-deps)."""
    sj = pytest.importorskip("spikingjelly.activation_based.neuron")
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    T = 6
    ref = sj.ILIFNode(
        tau=4.0 / 3.0,  # beta = 1 - 1/tau = 0.25
        v_threshold=1.0,
        surrogate_function=surrogate.MultiLevelSpikeCount(4),
        detach_reset=True,
        step_mode="m",
    )
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(T, 64, 16, generator=g) * 2.5).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ours = ILIF(D=4, T=T, beta=0.25)(x)
    theirs = ref(x_ref)
    assert torch.equal(ours, theirs)
    w = torch.randn(T, 64, 16, generator=g)
    (ours * w).sum().backward()
    (theirs * w).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
