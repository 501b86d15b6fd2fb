"""Kernel maps: which input site feeds which output site through which kernel offset.

Neighbour search packs (b, x, y, z) into one int64 key, sorts the keys once and answers every
offset query with ``torch.searchsorted`` plus an equality check; no dense grid is ever built, so
memory grows with the number of sites, not with the extent of the scene. When the coordinate
extent is too large to pack into 62 bits, an exact (slower) fallback ranks rows with
``torch.unique(dim=0)``. Maps are cached on the SparseTensor's ``kmaps`` dict, keyed by stride and
validated by coordinate-tensor identity, so every layer at one stride reuses one map.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import Tensor

_MAX_KEY = 1 << 62


@dataclass
class KernelMap:
    """Input/output site pairs per kernel offset (offsets in ``itertools.product(range(K), repeat=3)`` order).

    ``in_idx[k]`` / ``out_idx[k]`` index the input / output sites linked by offset ``k``; ``counts``
    holds their lengths as Python ints so conv loops can skip empty offsets without a device sync.
    """

    in_idx: list[Tensor]
    out_idx: list[Tensor]
    n_in: int
    n_out: int
    kernel_size: int
    stride: int = 1
    counts: list[int] = field(default_factory=list)
    identity_offset: int | None = None  # offset whose pairs are (i, i) for all sites (submanifold centre)

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [int(t.numel()) for t in self.in_idx]

    @property
    def n_pairs(self) -> int:
        """Total active input-output pairs (what the energy meter charges)."""
        return int(sum(self.counts))

    def transpose(self) -> KernelMap:
        """The same pairs with inputs and outputs swapped (inverse conv of a strided conv)."""
        return KernelMap(
            list(self.out_idx),
            list(self.in_idx),
            self.n_out,
            self.n_in,
            self.kernel_size,
            self.stride,
            list(self.counts),
            self.identity_offset,
        )


def kernel_offsets(kernel_size: int, centred: bool, device: torch.device | str = "cpu") -> Tensor:
    """(K**3, 3) int64 offsets in product order (x slowest); centred ones run from -(K//2) to K//2."""
    off = torch.tensor(list(itertools.product(range(kernel_size), repeat=3)), dtype=torch.long, device=device)
    return off - kernel_size // 2 if centred else off


def _spans(lo: Tensor, hi: Tensor) -> tuple[list[int], list[int], bool]:
    """Per-column lower bounds and spans of a packed key, and whether the product fits in 62 bits."""
    lo_l = [int(v) for v in lo.tolist()]
    span = [int(h) - int(v) + 1 for v, h in zip(lo_l, hi.tolist())]
    total = 1
    for s in span:
        total *= s
    return lo_l, span, total < _MAX_KEY


def _pack(coords: Tensor, lo: list[int], span: list[int]) -> Tensor:
    """Row-major int64 key of (N, 4) coords; order of keys equals lexicographic order of rows."""
    key = coords[:, 0] - lo[0]
    for d in range(1, 4):
        key = key * span[d] + (coords[:, d] - lo[d])
    return key


def _rank_rows(*sets: Tensor) -> list[Tensor]:
    """Exact fallback: one shared lexicographic rank per distinct row across all ``sets``."""
    cat = torch.cat(sets, 0)
    _, inv = torch.unique(cat, dim=0, return_inverse=True)
    return list(torch.split(inv, [s.shape[0] for s in sets]))


def _empty_map(n_in: int, n_out: int, kernel_size: int, stride: int, device: torch.device) -> KernelMap:
    e = torch.empty(0, dtype=torch.long, device=device)
    k3 = kernel_size**3
    return KernelMap([e] * k3, [e] * k3, n_in, n_out, kernel_size, stride, [0] * k3)


def submanifold_map(coords: Tensor, kernel_size: int = 3) -> KernelMap:
    """Pairs (i, j, k) with ``coords[j] + offset[k] == coords[i]`` restricted to existing sites.

    Output sites are the input sites (submanifold). Offset ``k`` and its mirror ``K**3-1-k`` are
    each other's transposes, so only half the offsets are searched.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"a submanifold conv needs an odd kernel size, got {kernel_size}")
    n = int(coords.shape[0])
    dev = coords.device
    k3 = kernel_size**3
    centre = k3 // 2
    if n == 0:
        kmap = _empty_map(0, 0, kernel_size, 1, dev)
        kmap.identity_offset = centre
        return kmap
    r = kernel_size // 2
    offsets = kernel_offsets(kernel_size, centred=True, device=dev)[:centre]  # the first half
    lo = coords.min(0).values
    hi = coords.max(0).values
    lo[1:] -= r
    hi[1:] += r
    lo_l, span, fits = _spans(lo, hi)
    if fits:
        keys = _pack(coords, lo_l, span)
        delta = ((offsets[:, 0] * span[2] + offsets[:, 1]) * span[3] + offsets[:, 2]).view(-1, 1)
        queries = keys.view(1, -1) + delta  # (K3/2, N): key of the neighbour at each offset
    else:
        shifted = [coords + torch.cat([offsets.new_zeros(1), o]) for o in offsets]
        ranks = _rank_rows(coords, *shifted)
        keys, queries = ranks[0], torch.stack(ranks[1:])
    sorted_keys, perm = torch.sort(keys)
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=n - 1)
    found = sorted_keys[pos] == queries
    rows, cols = found.nonzero(as_tuple=True)
    nbr = perm[pos[rows, cols]]
    counts = found.sum(1).tolist()
    # For offset o, the output site i=cols reads input nbr (= i + o).
    outs = torch.split(cols, counts)
    ins = torch.split(nbr, counts)
    ar = torch.arange(n, device=dev)
    in_idx: list[Tensor] = [ar] * k3
    out_idx: list[Tensor] = [ar] * k3
    cnt = [n] * k3
    for k in range(centre):
        in_idx[k], out_idx[k], cnt[k] = ins[k], outs[k], counts[k]
        # Mirror offset -o: output nbr reads input i.
        in_idx[k3 - 1 - k], out_idx[k3 - 1 - k], cnt[k3 - 1 - k] = outs[k], ins[k], counts[k]
    return KernelMap(in_idx, out_idx, n, n, kernel_size, 1, cnt, identity_offset=centre)


def strided_map(coords: Tensor, kernel_size: int = 2, stride: int = 2) -> tuple[KernelMap, Tensor]:
    """Map of a strided sparse conv (no padding) and its output coords on the coarser grid.

    Output site ``o`` reads input ``o * stride + k`` for every offset ``k`` in ``[0, K)^3``; an output
    exists wherever at least one input falls in its window (the sparse equivalent of a dense conv3d
    with enough margin). Output coords come sorted lexicographically by (b, x, y, z).
    """
    if kernel_size < 1 or stride < 1:
        raise ValueError(f"kernel size and stride must be >= 1, got {kernel_size}, {stride}")
    n = int(coords.shape[0])
    dev = coords.device
    if n == 0:
        return _empty_map(0, 0, kernel_size, stride, dev), coords.new_zeros((0, 4))
    offsets = kernel_offsets(kernel_size, centred=False, device=dev)
    xyz = coords[:, 1:]
    cand_idx, cand_k, cand_c = [], [], []
    for k in range(offsets.shape[0]):
        d = xyz - offsets[k]
        if stride == 1:
            idx = None
            o = d
        else:
            ok = (torch.remainder(d, stride) == 0).all(1)
            idx = ok.nonzero(as_tuple=True)[0]
            o = torch.div(d[idx], stride, rounding_mode="floor")
        if idx is None:
            idx = torch.arange(n, device=dev)
        cand_idx.append(idx)
        cand_k.append(idx.numel())
        cand_c.append(torch.cat([coords[idx, :1], o], 1))
    cand = torch.cat(cand_c, 0)
    lo_l, span, fits = _spans(cand.min(0).values, cand.max(0).values)
    keys = _pack(cand, lo_l, span) if fits else _rank_rows(cand)[0]
    uniq, inv = torch.unique(keys, sorted=True, return_inverse=True)
    out_coords = coords.new_empty((uniq.numel(), 4))
    out_coords[inv] = cand
    outs = torch.split(inv, cand_k)
    kmap = KernelMap(cand_idx, list(outs), n, int(uniq.numel()), kernel_size, stride, cand_k)
    return kmap, out_coords


def cached_submanifold_map(st, kernel_size: int = 3) -> KernelMap:
    """The submanifold map of ``st`` from its kmaps cache, built on first use at this stride."""
    key = ("subm", st.stride, kernel_size)
    hit = st.kmaps.get(key)
    if hit is not None and hit[0] is st.coords:
        return hit[1]
    kmap = submanifold_map(st.coords, kernel_size)
    st.kmaps[key] = (st.coords, kmap)
    return kmap


def cached_strided_map(st, kernel_size: int = 2, stride: int = 2) -> tuple[KernelMap, Tensor]:
    """The strided map and output coords of ``st``; also registers them for the matching inverse conv."""
    key = ("down", st.stride, kernel_size, stride)
    hit = st.kmaps.get(key)
    if hit is not None and hit[0] is st.coords:
        return hit[1], hit[2]
    kmap, out_coords = strided_map(st.coords, kernel_size, stride)
    st.kmaps[key] = (st.coords, kmap, out_coords)
    st.kmaps[("up", st.stride * stride, kernel_size, stride)] = (out_coords, kmap, st.coords, st.stride)
    return kmap, out_coords


def cached_inverse_map(st, kernel_size: int = 2, stride: int = 2) -> tuple[KernelMap, Tensor, int]:
    """The transposed map of the strided conv that produced ``st``, the finer coords and stride."""
    hit = st.kmaps.get(("up", st.stride, kernel_size, stride))
    if hit is None or not (hit[0] is st.coords or torch.equal(hit[0], st.coords)):
        raise ValueError(
            f"no strided conv (kernel {kernel_size}, stride {stride}) produced this tensor at stride "
            f"{st.stride}: an inverse conv can only restore sites of a matching strided conv applied to the "
            "same input (same kmaps cache)"
        )
    return hit[1].transpose(), hit[2], hit[3]
