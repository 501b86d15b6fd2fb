"""CenterPoint-style spiking 3D detector on the E-3DSNN encoder (docs/SPEC.md §9 "Detection").

Points are voxelized on a fixed grid anchored at the point cloud range (`BEVGrid`), so every voxel
and BEV cell sits at an absolute position in metres and boxes can be read off cell indices. The
encoder is E-3DSNN's stem and its first stages under the same names (``stem.*``, ``stages.*``), so an
SVL-pretrained E-3DSNN loads by name (`E3DSNNDetector.load_encoder_state`). Its membranes at the BEV
stride are scattered into a dense map with the height folded into channels (`height_collapse`); a
spiking 2D neck (SN -> conv -> BN units, residuals into membranes, one stride-2 level and back) and a
CenterPoint head (shared conv, one branch per output) give per-cell maps, averaged over timesteps:

- ``heatmap`` (num_classes): logits of an object centre in the cell,
- ``offset`` (2): the centre's sub-cell position (x, y) in cells, in [0, 1) for the true cell,
- ``z`` (1): the box centre z in metres, ``size`` (3): log of (l, w, h), ``rot`` (2): (sin, cos) yaw.

`centerpoint_targets` builds the training targets (CenterNet gaussians), `centerpoint_loss` the focal
+ L1 loss and `decode` turns maps into boxes by 3x3 peak picking, with no NMS (the task runs rotated
NMS itself). Boxes follow svl.boxes: rows ``(x, y, z, l, w, h, yaw)``, z-up, centre z.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import svl.sparse as sp
from svl.models._registry import default_contract, register_model, unpack_inputs
from svl.models.e3dsnn import E3DSNN, ENCODER_PREFIXES, build_e3dsnn
from svl.spiking import SConv2d, StepBatchNorm2d, make_neuron

__all__ = [
    "DET_VARIANTS",
    "KITTI_RANGE",
    "BEVGrid",
    "BEVNeck",
    "CenterHead",
    "E3DSNNDetector",
    "centerpoint_loss",
    "centerpoint_targets",
    "decode",
    "e3dsnn_det_s",
    "e3dsnn_det_s_ann",
    "e3dsnn_det_t",
    "e3dsnn_det_t_ann",
    "focal_loss",
    "gaussian_radius",
    "height_collapse",
    "output_channels",
]

# OpenPCDet's KITTI range (x forward 0..70.4 m, y left -40..40 m, z -3..1 m) and voxel (0.05, 0.05, 0.1):
# 1408 x 1600 x 40 voxels, a 176 x 200 BEV at stride 8.
KITTI_RANGE = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
KITTI_VOXEL = (0.05, 0.05, 0.1)
HEATMAP_BIAS = -2.19  # CenterNet / CenterPoint: sigmoid(-2.19) ~ 0.1, the focal-loss prior
REGRESSION = ("offset", "z", "size", "rot")
_ENCODER = ("stem.", "stages.")

# name: (neck channels, head channels, residual blocks per neck level)
DET_VARIANTS: dict[str, tuple[int, int, int]] = {"t": (64, 64, 1), "s": (128, 64, 1)}


def output_channels(num_classes: int) -> dict[str, int]:
    """The head's output maps and their channels, in the order it makes them."""
    return {"heatmap": num_classes, "offset": 2, "z": 1, "size": 3, "rot": 2}


# ----------------------------------------------------------------------------- the grid
def _triple(v: float | Sequence[float], what: str) -> tuple[float, float, float]:
    vs = [float(x) for x in v] if isinstance(v, Sequence) else [float(v)] * 3
    if len(vs) != 3 or not all(math.isfinite(x) and x > 0 for x in vs):
        raise ValueError(f"{what} must be a positive number or 3 of them (x, y, z), got {v!r}")
    return vs[0], vs[1], vs[2]


@dataclass(frozen=True)
class BEVGrid:
    """Where every voxel and BEV cell of the detector sits, in metres.

    Voxel ``(i, j, k)`` covers ``[x_min + i vx, x_min + (i + 1) vx)`` (and likewise in y, z); points
    outside ``point_cloud_range`` ``(x_min, y_min, z_min, x_max, y_max, z_max)`` are dropped, so voxel
    indices are >= 0 and absolute, not relative to each cloud. A strided sparse conv (k2, s2) maps
    index ``i`` to ``i // 2``, so at ``stride`` s a BEV cell (row r, column c) covers
    ``x in [x_min + c cx, x_min + (c + 1) cx)``, ``y in [y_min + r cy, ...)`` with ``cx = vx * s``.
    BEV maps are ``(..., H, W)``: rows along +y, columns along +x (OpenPCDet's layout).
    """

    point_cloud_range: tuple[float, float, float, float, float, float]
    voxel_size: tuple[float, float, float]
    stride: int = 8

    def __init__(
        self,
        point_cloud_range: Sequence[float],
        voxel_size: float | Sequence[float],
        stride: int = 8,
    ) -> None:
        r = tuple(float(x) for x in point_cloud_range)
        if len(r) != 6 or not all(math.isfinite(x) for x in r) or not all(r[i + 3] > r[i] for i in range(3)):
            raise ValueError(
                f"point_cloud_range must be (x_min, y_min, z_min, x_max, y_max, z_max) with max > min, "
                f"got {point_cloud_range!r}"
            )
        if not isinstance(stride, int) or stride < 1 or stride & (stride - 1):
            raise ValueError(f"BEV stride must be a power of two >= 1, got {stride!r}")
        object.__setattr__(self, "point_cloud_range", r)
        object.__setattr__(self, "voxel_size", _triple(voxel_size, "voxel_size"))
        object.__setattr__(self, "stride", stride)

    @property
    def origin(self) -> tuple[float, float, float]:
        """The corner (x_min, y_min, z_min) of voxel (0, 0, 0)."""
        return self.point_cloud_range[0], self.point_cloud_range[1], self.point_cloud_range[2]

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Voxels (nx, ny, nz) covering the range (a range not a whole number of voxels rounds up)."""
        r, v = self.point_cloud_range, self.voxel_size
        n = [math.ceil((r[i + 3] - r[i]) / v[i] - 1e-6) for i in range(3)]
        return n[0], n[1], n[2]

    @property
    def W(self) -> int:  # noqa: N802
        """BEV columns (along x)."""
        return -(-self.grid_size[0] // self.stride)

    @property
    def H(self) -> int:  # noqa: N802
        """BEV rows (along y)."""
        return -(-self.grid_size[1] // self.stride)

    @property
    def Z(self) -> int:  # noqa: N802
        """z cells at the BEV stride: the height that `height_collapse` folds into channels."""
        return -(-self.grid_size[2] // self.stride)

    @property
    def cell_size(self) -> tuple[float, float]:
        """(cx, cy): a BEV cell's extent in metres."""
        return self.voxel_size[0] * self.stride, self.voxel_size[1] * self.stride

    def xy_to_cell(self, xy: Tensor) -> Tensor:
        """Metres ``(..., 2)`` -> continuous (column, row): integer part = the cell, the rest = the offset."""
        cx, cy = self.cell_size
        return torch.stack([(xy[..., 0] - self.origin[0]) / cx, (xy[..., 1] - self.origin[1]) / cy], -1)

    def cell_to_xy(self, cell: Tensor) -> Tensor:
        """Continuous (column, row) ``(..., 2)`` -> metres (the inverse of `xy_to_cell`)."""
        cx, cy = self.cell_size
        return torch.stack([cell[..., 0] * cx + self.origin[0], cell[..., 1] * cy + self.origin[1]], -1)

    def voxelize(self, xyz: Tensor, feats: Tensor, batch: Tensor, batch_size: int) -> Any:
        """Points ``(P, 3)`` with features ``(P, C)`` and sample index ``(P,)`` -> SparseTensor at stride 1.

        Points outside the range (and NaN / inf ones) are dropped; the others are shifted by the
        range minimum, so the coords are this grid's absolute voxel indices. Features are the mean
        over each voxel's points, as in svl.sparse.voxelize.
        """

        shifted = xyz - xyz.new_tensor(self.origin)
        # The same float64 floor as svl.sparse.voxelize, so kept points land in [0, grid_size).
        vs = torch.tensor(self.voxel_size, dtype=torch.float64, device=xyz.device)
        idx = torch.floor(shifted.detach().double() / vs)
        hi = torch.tensor(self.grid_size, dtype=torch.float64, device=xyz.device)
        keep = ((idx >= 0) & (idx < hi)).all(1)
        st, _ = sp.voxelize(shifted[keep], feats[keep], batch[keep], self.voxel_size, batch_size=batch_size)
        return st


def height_collapse(st: Any, grid: BEVGrid) -> Tensor:
    """Sparse sites at the BEV stride -> dense ``(*lead, B, C * Z, H, W)``; empty cells are 0.

    Channel ``c * Z + z`` holds channel c of z cell z (OpenPCDet's HeightCompression). ``lead`` are
    the feature's step dims (time when T > 1). The values are membranes (a stage's output), so a zero
    cell makes no spike in the next neuron, like an absent site.
    """
    f = st.features
    if not isinstance(f, Tensor):
        raise TypeError("height_collapse takes membrane features (a Tensor), not spikes")
    if st.stride != grid.stride:
        raise ValueError(f"sites are at stride {st.stride}, the BEV grid at stride {grid.stride}")
    B, H, W, Z = st.batch_size, grid.H, grid.W, grid.Z
    b, x, y, z = st.coords.unbind(1)
    if st.num_sites:  # one sync: a site off the grid would land in another cell, not fail
        xyz = st.coords[:, 1:]
        ext = torch.cat([xyz.min(0).values, xyz.max(0).values]).tolist()
        lo, hi = ext[:3], ext[3:]
        if min(lo) < 0 or hi[0] >= W or hi[1] >= H or hi[2] >= Z:
            raise ValueError(
                f"sites span {lo}..{hi}, outside the BEV grid (W, H, Z) = ({W}, {H}, {Z}): "
                "voxelize with BEVGrid.voxelize"
            )
    lead, c = tuple(f.shape[:-2]), f.shape[-1]
    cell = ((b * H + y) * W + x) * Z + z
    dense = f.new_zeros(*lead, B * H * W * Z, c).index_copy(len(lead), cell, f)
    n = len(lead)
    dense = dense.view(*lead, B, H, W, Z, c).permute(*range(n), n, n + 4, n + 3, n + 1, n + 2)
    return dense.reshape(*lead, B, c * Z, H, W)


# ----------------------------------------------------------------------------- neck and head
class SpikeConv2d(nn.Module):
    """SN -> SConv2d (no bias) -> BN: membrane in, membrane out, only spikes reach the weights."""

    def __init__(self, cin: int, cout: int, nf: Any, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.sn = nf()
        self.conv = SConv2d(cin, cout, kernel_size, stride, padding=kernel_size // 2, bias=False)
        self.bn = StepBatchNorm2d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(self.sn(x)))


class ResBlock2d(nn.Module):
    """``x + U2(U1(x))`` with U = SN -> conv3x3 -> BN: the residual joins membranes, never spikes."""

    def __init__(self, c: int, nf: Any) -> None:
        super().__init__()
        self.conv1, self.conv2 = SpikeConv2d(c, c, nf), SpikeConv2d(c, c, nf)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class UpConv2d(nn.Module):
    """SN -> 1x1 SConv2d(cin -> 4 cout) -> pixel shuffle x2 -> BN: a kernel-2 stride-2 transposed conv.

    The same weights and MACs as ConvTranspose2d(k2, s2), written as a Conv2d so the energy meter
    (which hooks Conv2d, not transposed convs) counts it.
    """

    def __init__(self, cin: int, cout: int, nf: Any) -> None:
        super().__init__()
        self.sn = nf()
        self.conv = SConv2d(cin, 4 * cout, 1, bias=False)
        self.bn = StepBatchNorm2d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(F.pixel_shuffle(self.conv(self.sn(x)), 2))


class BEVNeck(nn.Module):
    """Spiking BEV neck: reduce + blocks at the BEV stride, a stride-2 level, up and added back.

    The coarse level sees twice the context (SECOND / CenterPoint's two-scale BEV backbone); adding
    its upsampled membrane keeps the channels at ``c`` and the maps at the grid's H x W.
    """

    def __init__(self, cin: int, c: int, blocks: int, nf: Any) -> None:
        super().__init__()
        self.reduce = SpikeConv2d(cin, c, nf)
        self.blocks = nn.Sequential(*(ResBlock2d(c, nf) for _ in range(blocks)))
        self.down = SpikeConv2d(c, 2 * c, nf, stride=2)
        self.down_blocks = nn.Sequential(*(ResBlock2d(2 * c, nf) for _ in range(blocks)))
        self.up = UpConv2d(2 * c, c, nf)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.reduce(x))
        y = self.up(self.down_blocks(self.down(x)))  # odd H / W come back one larger: crop
        return x + y[..., : x.shape[-2], : x.shape[-1]]


class _Branch(nn.Module):
    """conv3x3 -> BN -> SN -> conv3x3 with bias on the head's shared spikes: one output map."""

    def __init__(self, c: int, out: int, nf: Any) -> None:
        super().__init__()
        self.conv = SConv2d(c, c, 3, padding=1, bias=False)
        self.bn = StepBatchNorm2d(c, eps=1e-3, momentum=0.01)
        self.sn = nf()
        self.out = SConv2d(c, out, 3, padding=1, bias=True)

    def forward(self, spikes: Any) -> Tensor:
        return self.out(self.sn(self.bn(self.conv(spikes))))


class CenterHead(nn.Module):
    """CenterPoint head: a shared SN -> conv3x3 -> BN -> SN, then one branch per map (output_channels).

    The branches read the same spikes, so one neuron serves them all.
    """

    def __init__(self, cin: int, c: int, num_classes: int, nf: Any) -> None:
        super().__init__()
        self.shared = SpikeConv2d(cin, c, nf)
        self.sn = nf()
        self.branches = nn.ModuleDict({k: _Branch(c, n, nf) for k, n in output_channels(num_classes).items()})
        nn.init.constant_(self.branches["heatmap"].out.bias, HEATMAP_BIAS)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        s = self.sn(self.shared(x))
        return {k: branch(s) for k, branch in self.branches.items()}


# ----------------------------------------------------------------------------- the detector
class E3DSNNDetector(nn.Module):
    """E-3DSNN encoder -> height collapse -> spiking BEV neck -> CenterPoint head.

    ``forward(batch) -> {"heatmap": (B, num_classes, H, W), "offset": (B, 2, H, W), "z": (B, 1, H, W),
    "size": (B, 3, H, W), "rot": (B, 2, H, W)}`` on ``self.grid`` (averaged over T). ``batch`` is a
    PointBatch or a (B, N, C) tensor of points in metres; they are voxelized here on the grid (a
    precomputed ``batch.sparse`` is ignored: its voxels are not anchored at the range). Pad clouds to
    a common N with points outside the range: they are dropped. The encoder runs ``log2(bev_stride)``
    of E-3DSNN's four stages.
    """

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 6,
        T: int = 1,
        D: int = 4,
        neuron: str = "ilif",
        beta: float = 0.25,
        voxel_size: float | Sequence[float] = KITTI_VOXEL,
        point_cloud_range: Sequence[float] = KITTI_RANGE,
        bev_stride: int = 8,
        stem_channels: int = 16,
        channels: Sequence[int] = (16, 32, 64, 128),
        depth: int = 1,
        neck_channels: int = 64,
        neck_blocks: int = 1,
        head_channels: int = 64,
        num_points: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if bev_stride not in (1, 2, 4, 8, 16):
            raise ValueError(
                f"bev_stride must be 1, 2, 4, 8 or 16 (E-3DSNN has 4 stride-2 stages), got {bev_stride}"
            )
        self.grid = BEVGrid(point_cloud_range, voxel_size, bev_stride)
        vs = self.grid.voxel_size
        enc = E3DSNN(
            in_channels=in_channels, out_dim=1, T=T, D=D, neuron=neuron, beta=beta, voxel_size=vs[0],
            stem_channels=stem_channels, channels=channels, depth=depth, num_points=num_points,
        )  # fmt: skip
        self.in_channels, self.num_classes, self.out_dim = in_channels, num_classes, num_classes
        self.T, self.D, self.neuron, self.num_points = T, D, neuron, num_points
        # A contract's voxel_size is one number: the voxel if it is a cube, else unknown (see self.grid).
        self.voxel_size = vs[0] if vs[0] == vs[1] == vs[2] else None
        n_stages = bev_stride.bit_length() - 1
        # Same attribute names as E3DSNN so its checkpoints' stem.* / stages.* load by name.
        self.stem, self.stages = enc.stem, nn.ModuleList(list(enc.stages)[:n_stages])
        c_bev = (channels[n_stages - 1] if n_stages else stem_channels) * self.grid.Z

        def nf() -> nn.Module:
            return make_neuron(neuron, D=D, T=T, beta=beta)

        self.neck = BEVNeck(c_bev, neck_channels, neck_blocks, nf)
        self.head = CenterHead(neck_channels, head_channels, num_classes, nf)
        self.pretrained_cfg = default_contract(self).to_dict()

    def voxelize(self, batch: Any) -> Any:
        """The batch's points on the grid: SparseTensor at stride 1, features (N, C) or (T, N, C)."""
        inp = unpack_inputs(batch, self.in_channels, self.T, self.stem[0].conv.weight.dtype)
        if inp.steps:
            raise ValueError(
                "the detector takes one cloud per sample; per-step inputs (extras['steps']) are not supported"
            )
        xyz, feats = inp.xyz, inp.feats
        b, n = xyz.shape[:2]
        idx = torch.arange(b, device=xyz.device).repeat_interleave(n)
        st = self.grid.voxelize(xyz.reshape(-1, 3), feats.reshape(b * n, -1), idx, b)
        if self.T > 1:
            f = st.features
            st = st.replace(features=f.unsqueeze(0).expand(self.T, *f.shape).contiguous())
        return st

    def forward_bev(self, batch: Any) -> Tensor:
        """Encoder membranes at the BEV stride as a dense map ``([T,] B, C * Z, H, W)``."""
        x = self.voxelize(batch)
        for m in self.stem:
            x = m(x)
        for s in self.stages:
            x = s(x)
        return height_collapse(x, self.grid)

    def forward(self, batch: Any) -> dict[str, Tensor]:
        out = self.head(self.neck(self.forward_bev(batch)))
        if self.T > 1:  # rate-coded outputs: average over time
            out = {k: v.mean(0) for k, v in out.items()}
        return out

    def load_encoder_state(self, state: Mapping[str, Tensor]) -> list[str]:
        """Copy an E-3DSNN state dict's ``stem.*`` / ``stages.*`` into this model; returns the names left out.

        Left out are the encoder's head and the stages past the BEV stride. Every encoder entry of this
        model must be present with its shape (else ValueError naming them, nothing loaded), e.g. a
        pretraining checkpoint's ``encoder.*`` tensors with the prefix removed.
        """
        own = {k: v for k, v in self.state_dict().items() if k.startswith(_ENCODER)}
        missing = [k for k in own if k not in state]
        misshaped = [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in own.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ]
        if missing or misshaped:
            raise ValueError(
                f"encoder weights do not match the detector: {len(missing)} missing {missing[:5]}, "
                f"{len(misshaped)} mis-shaped {misshaped[:5]}"
            )
        self.load_state_dict({k: state[k] for k in own}, strict=False)
        return sorted(k for k in state if k not in own)


# ----------------------------------------------------------------------------- targets, loss, decoding
def gaussian_radius(length: Tensor, width: Tensor, min_overlap: float = 0.1) -> Tensor:
    """CenterNet's heatmap radius (in cells) for boxes of ``length x width`` cells.

    The largest corner shift that keeps IoU >= ``min_overlap`` in the worst of CenterNet's three
    cases, computed as CenterPoint / OpenPCDet do (each root halved rather than divided by 2a, which
    those radii were tuned with).
    """
    h, w, o = length, width, min_overlap
    b1, c1 = h + w, w * h * (1 - o) / (1 + o)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - o) * w * h
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * o, -2 * o * (h + w), (o - 1) * w * h
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def centerpoint_targets(
    boxes: Tensor,
    labels: Tensor,
    grid: BEVGrid,
    num_classes: int,
    min_radius: int = 2,
    gaussian_overlap: float = 0.1,
) -> dict[str, Tensor]:
    """CenterPoint targets of ``boxes (B, K, 7)`` with ``labels (B, K)`` (-1 = padding row).

    Returns ``heatmap (B, num_classes, H, W)`` (a gaussian of radius
    ``max(min_radius, floor(gaussian_radius(l, w)))`` cells around each centre cell, 1 at the centre),
    ``index (B, K)`` (centre cell ``row * W + col``, 0 where masked), ``mask (B, K)`` (a real box whose
    centre falls on the grid), ``labels (B, K)`` (-1 where masked) and the regression targets at
    the centre cells: ``offset (B, K, 2)``, ``z (B, K, 1)``, ``size (B, K, 3)`` (log l, w, h),
    ``rot (B, K, 2)`` (sin, cos yaw), zero where masked.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 7 or labels.shape != boxes.shape[:2]:
        raise ValueError(
            f"boxes must be (B, K, 7) and labels (B, K), got {tuple(boxes.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.long()
    if bool((labels >= num_classes).any()):
        raise ValueError(f"box labels reach {int(labels.max())} but the detector has {num_classes} classes")
    valid = labels >= 0
    boxes = boxes.float()
    if bool((valid[..., None] & (boxes[..., 3:6] <= 0)).any()):
        raise ValueError("boxes with a label >= 0 must have positive sizes l, w, h")
    B, K = labels.shape
    H, W = grid.H, grid.W
    centre = grid.xy_to_cell(boxes[..., :2])  # (B, K, 2) continuous (column, row)
    cell = torch.floor(centre).long()
    col, row = cell[..., 0], cell[..., 1]
    mask = valid & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    zero = torch.zeros((), device=boxes.device)
    m3 = mask[..., None]
    out = {
        "index": torch.where(mask, row * W + col, 0),
        "mask": mask,
        "labels": torch.where(mask, labels, -1),
        "offset": torch.where(m3, centre - cell.to(centre), zero),
        "z": torch.where(m3, boxes[..., 2:3], zero),
        "size": torch.where(m3, torch.log(boxes[..., 3:6].clamp_min(1e-12)), zero),
        "rot": torch.where(m3, torch.stack([boxes[..., 6].sin(), boxes[..., 6].cos()], -1), zero),
    }
    heat = torch.zeros(B, num_classes, H, W, device=boxes.device)
    bi, ki = mask.nonzero(as_tuple=True)
    if bi.numel():
        cx, cy = grid.cell_size
        r = gaussian_radius(boxes[bi, ki, 3] / cx, boxes[bi, ki, 4] / cy, gaussian_overlap)
        r = torch.floor(r).clamp_min(min_radius).long()  # (M,)
        R = int(r.max())
        d = torch.arange(-R, R + 1, device=boxes.device)
        dy, dx = torch.meshgrid(d, d, indexing="ij")  # (S, S) window around the centre cell
        sigma = (2 * r + 1).float() / 6  # CenterNet: diameter / 6
        g = torch.exp(-(dx**2 + dy**2)[None].float() / (2 * sigma[:, None, None] ** 2))
        rows, cols = row[bi, ki][:, None, None] + dy, col[bi, ki][:, None, None] + dx
        ok = (dx.abs() <= r[:, None, None]) & (dy.abs() <= r[:, None, None])
        ok &= (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
        plane = (bi * num_classes + labels[bi, ki])[:, None, None].expand_as(rows)
        flat = (plane * H + rows) * W + cols
        heat.view(-1).scatter_reduce_(0, flat[ok], g[ok], "amax", include_self=True)
    out["heatmap"] = heat
    return out


def focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4) summed over the map / number of centres.

    Positives are the cells where ``target == 1``; other cells are pushed down by ``(1 - target)^4``,
    so cells near a centre cost little. Log-probabilities come from logsigmoid (no 1e-4 clamp needed).
    """
    p = torch.sigmoid(logits)
    pos = target.eq(1)
    pos_term = F.logsigmoid(logits) * (1 - p) ** 2
    neg_term = F.logsigmoid(-logits) * p**2 * (1 - target) ** 4
    total = torch.where(pos, pos_term, neg_term).sum()
    return -total / pos.sum().clamp_min(1)


def _at(maps: Tensor, index: Tensor) -> Tensor:
    """Values of ``maps (B, C, H, W)`` at flat cells ``index (B, K)`` -> (B, K, C)."""
    flat = maps.flatten(2)
    return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


def centerpoint_loss(
    out: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    heatmap_weight: float = 1.0,
    reg_weight: float = 2.0,
) -> dict[str, Tensor]:
    """Focal loss on the heatmap plus L1 on every regression map at the true centre cells.

    Each regression term is summed over its channels and averaged over the boxes (CenterPoint's
    RegLoss with unit code weights). Returns the terms, ``reg`` (their sum) and
    ``loss = heatmap_weight * heatmap + reg_weight * reg`` (CenterPoint's KITTI weights 1 and 2).
    """
    mask = targets["mask"]
    num = mask.sum().clamp_min(1)
    losses = {"heatmap": focal_loss(out["heatmap"], targets["heatmap"])}
    for name in REGRESSION:
        diff = (_at(out[name], targets["index"]) - targets[name]).abs()
        losses[name] = torch.where(mask[..., None], diff, torch.zeros_like(diff)).sum() / num
    losses["reg"] = sum(losses[n] for n in REGRESSION)
    losses["loss"] = heatmap_weight * losses["heatmap"] + reg_weight * losses["reg"]
    return losses


@torch.no_grad()
def decode(
    out: Mapping[str, Tensor], grid: BEVGrid, topk: int = 100, score_threshold: float = 0.1
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per sample ``(boxes (N, 7), scores (N,), labels (N,))`` from the head's maps, best first.

    Peaks are cells equal to the 3x3 max of their class's sigmoid heatmap; the ``topk`` best over all
    classes with score >= ``score_threshold`` become boxes: centre = cell + offset in metres, z,
    exp(size), yaw = atan2(sin, cos). No NMS.
    """
    heat = torch.sigmoid(out["heatmap"])
    B, C, H, W = heat.shape
    if (H, W) != (grid.H, grid.W):
        raise ValueError(f"maps are {H} x {W} but the grid is {grid.H} x {grid.W}")
    heat = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, inds = heat.flatten(1).topk(min(topk, C * H * W), dim=1)
    cls, cell = inds // (H * W), inds % (H * W)
    rowcol = torch.stack([cell % W, cell // W], -1).to(heat)  # (column, row)
    xy = grid.cell_to_xy(rowcol + _at(out["offset"], cell))
    rot = _at(out["rot"], cell)
    yaw = torch.atan2(rot[..., 0], rot[..., 1])
    boxes = torch.cat([xy, _at(out["z"], cell), _at(out["size"], cell).exp(), yaw[..., None]], -1)
    keep = scores >= score_threshold
    return [(boxes[b][keep[b]], scores[b][keep[b]], cls[b][keep[b]]) for b in range(B)]


# ----------------------------------------------------------------------------- registered builders
def _build(variant: str, neuron: str, **kw: Any) -> E3DSNNDetector:
    neck, head, blocks = DET_VARIANTS[variant]
    extra = {"neck_channels": neck, "head_channels": head, "neck_blocks": blocks}
    return build_e3dsnn(E3DSNNDetector, variant, neuron, extra, **kw)


@register_model(family="e3dsnn_det", voxel=True, encoder="e3dsnn_t", encoder_prefixes=ENCODER_PREFIXES)
def e3dsnn_det_t(**kw: Any) -> E3DSNNDetector:
    """Spiking CenterPoint on E-3DSNN-T (stem 16, stages to stride 8: 16, 32, 64), neck and head 64."""
    return _build("t", "ilif", **kw)


@register_model(family="e3dsnn_det", voxel=True, encoder="e3dsnn_s", encoder_prefixes=ENCODER_PREFIXES)
def e3dsnn_det_s(**kw: Any) -> E3DSNNDetector:
    """Spiking CenterPoint on E-3DSNN-S (stem 24, stages to stride 8: 24, 48, 96), neck 128, head 64."""
    return _build("s", "ilif", **kw)


@register_model(family="e3dsnn_det", voxel=True, encoder="e3dsnn_t_ann", encoder_prefixes=ENCODER_PREFIXES)
def e3dsnn_det_t_ann(**kw: Any) -> E3DSNNDetector:
    """ANN twin of e3dsnn_det_t (ReLU instead of I-LIF), for energy and accuracy baselines."""
    return _build("t", "relu", **kw)


@register_model(family="e3dsnn_det", voxel=True, encoder="e3dsnn_s_ann", encoder_prefixes=ENCODER_PREFIXES)
def e3dsnn_det_s_ann(**kw: Any) -> E3DSNNDetector:
    """ANN twin of e3dsnn_det_s."""
    return _build("s", "relu", **kw)
