"""Spiking CenterPoint detector (svl/models/detector.py): grid, shapes, spike modes, encoder loading,
energy, targets <-> decoding, focal loss, and a short overfit on one synthetic scene."""

from __future__ import annotations

import math

import pytest
import torch

from svl.data import collate_points
from svl.energy.meter import measure_energy
from svl.models import create_model, list_models
from svl.models.detector import (
    BEVGrid,
    centerpoint_loss,
    centerpoint_targets,
    decode,
    focal_loss,
    height_collapse,
)
from svl.sparse import SparseTensor
from svl.spiking import ILIF, record_spikes, set_spike_mode, spike_stats

# 80 x 64 x 16 voxels of 0.1 m: a 10 (W, x) x 8 (H, y) BEV of 0.8 m cells at stride 8, 2 z cells.
RANGE = (-4.0, -3.2, -0.2, 4.0, 3.2, 1.4)
VS = 0.1
BOXES = torch.tensor([[-1.9, 1.0, 0.45, 1.6, 0.8, 0.9, 0.4], [1.7, -1.1, 0.6, 1.2, 1.0, 1.2, -2.0]])


def _surface(box: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n points on the faces of an oriented box (x, y, z, l, w, h, yaw)."""
    u = torch.rand(n, 3, generator=g) - 0.5
    face = torch.randint(0, 3, (n,), generator=g)
    u[torch.arange(n), face] = torch.randint(0, 2, (n,), generator=g).float() - 0.5
    loc = u * box[3:6]
    c, s = math.cos(box[6]), math.sin(box[6])
    xy = torch.stack([loc[:, 0] * c - loc[:, 1] * s, loc[:, 0] * s + loc[:, 1] * c], 1)
    return torch.cat([xy, loc[:, 2:]], 1) + box[:3]


def _scene(b: int = 1, seed: int = 0):
    """b scenes: the two boxes (moved a little per sample) with points on their surfaces, on a floor."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(b):
        boxes = BOXES.clone()
        boxes[:, :2] += 0.3 * i
        floor = torch.cat([torch.rand(400, 2, generator=g) * 7 - 3.5, torch.zeros(400, 1)], 1)
        xyz = torch.cat([*(_surface(bx, 700, g) for bx in boxes), floor])
        samples.append({"xyz": xyz, "boxes": boxes, "box_labels": torch.tensor([0, 1])})
    return collate_points(samples)


def _model(name: str = "e3dsnn_det_t", calibrate=None, **kw):
    torch.manual_seed(0)
    kw = {"num_classes": 2, "point_cloud_range": RANGE, "voxel_size": VS, **kw}
    model = create_model(name, **kw)
    return calibrate(model, _scene(2, seed=1)) if calibrate is not None else model.eval()


# ----------------------------------------------------------------------------- grid and voxelization
def test_grid_geometry_and_cell_round_trip():
    g = BEVGrid(RANGE, VS, 8)
    assert g.grid_size == (80, 64, 16) and (g.H, g.W, g.Z) == (8, 10, 2)
    assert g.cell_size == pytest.approx((0.8, 0.8)) and g.origin == (-4.0, -3.2, -0.2)
    kitti = BEVGrid((0, -40, -3, 70.4, 40, 1), (0.05, 0.05, 0.1), 8)
    assert kitti.grid_size == (1408, 1600, 40) and (kitti.H, kitti.W, kitti.Z) == (200, 176, 5)
    xy = torch.tensor([[-4.0, -3.2], [0.5, 1.3], [3.99, 3.19]])
    cell = g.xy_to_cell(xy)
    torch.testing.assert_close(cell[1], torch.tensor([4.5 / 0.8, 4.5 / 0.8]))
    assert torch.floor(cell).long().tolist() == [[0, 0], [5, 5], [9, 7]]
    torch.testing.assert_close(g.cell_to_xy(cell), xy)
    with pytest.raises(ValueError, match="max > min"):
        BEVGrid((0, 0, 0, 1, -1, 1), VS)
    with pytest.raises(ValueError, match="power of two"):
        BEVGrid(RANGE, VS, 6)
    with pytest.raises(ValueError, match="voxel_size"):
        BEVGrid(RANGE, (0.1, 0.0, 0.1))


def test_voxelize_is_absolute_and_drops_points_outside_the_range(calibrate_bn):
    g = BEVGrid(RANGE, VS, 8)
    xyz = torch.tensor(
        [[-3.95, -3.15, -0.15], [3.95, 3.15, 1.35], [0.05, 0.05, 0.05], [4.0, 0, 0], [0, 0, -0.3]]
    )
    st = g.voxelize(xyz, xyz.clone(), torch.zeros(5, dtype=torch.long), 1)
    assert st.coords.tolist() == [[0, 0, 0, 0], [0, 40, 32, 2], [0, 79, 63, 15]]
    torch.testing.assert_close(st.features[1], xyz[2])
    # A sample whose points all lie outside the range gets an empty BEV; the other keeps its own.
    model = _model(calibrate=calibrate_bn)  # calibrated, so the stages fire and membranes are not all 0
    batch = _scene(2)
    batch.xyz[1] += 100.0
    bev = model.forward_bev(batch)
    assert bev.shape == (2, 64 * 2, 8, 10) and bev[1].abs().sum() == 0 and bev[0].abs().sum() > 0


def test_height_collapse_layout():
    g = BEVGrid(RANGE, VS, 8)
    coords = torch.tensor([[0, 3, 5, 1], [1, 9, 0, 0]])
    feats = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    dense = height_collapse(SparseTensor(feats, coords, 2, stride=8), g)
    assert dense.shape == (2, 3 * 2, 8, 10) and dense.abs().sum() == feats.sum()
    for (b, x, y, z), f in zip(coords.tolist(), feats):
        assert dense[b, [c * 2 + z for c in range(3)], y, x].tolist() == f.tolist()
    timed = height_collapse(SparseTensor(torch.stack([feats, -feats]), coords, 2, stride=8), g)
    assert timed.shape == (2, 2, 6, 8, 10) and torch.equal(timed[1], -dense)
    with pytest.raises(ValueError, match="stride"):
        height_collapse(SparseTensor(feats, coords, 2, stride=4), g)


# ----------------------------------------------------------------------------- the model
@pytest.mark.parametrize("T", [1, 2])
def test_output_shapes(T):
    out = _model(T=T)(_scene(2))
    chans = {"heatmap": 2, "offset": 2, "z": 1, "size": 3, "rot": 2}
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, c, 8, 10) for k, c in chans.items()}
    assert all(torch.isfinite(v).all() for v in out.values())


def test_registry_contract_and_ann_twin():
    assert list_models("e3dsnn_det*") == [
        "e3dsnn_det_s",
        "e3dsnn_det_s_ann",
        "e3dsnn_det_t",
        "e3dsnn_det_t_ann",
    ]
    s = create_model("e3dsnn_det_s", num_classes=3)
    assert s.out_dim == 3 and s.pretrained_cfg["embed_dim"] == 3 and s.pretrained_cfg["D"] == 4
    assert s.pretrained_cfg["voxel_size"] is None  # KITTI's (0.05, 0.05, 0.1) is not one number
    assert (s.grid.H, s.grid.W) == (200, 176) and len(s.stages) == 3
    twin = _model("e3dsnn_det_t_ann")
    assert not any(isinstance(m, ILIF) for m in twin.modules())
    assert twin.pretrained_cfg["D"] is None and twin.pretrained_cfg["voxel_size"] == VS
    out = twin(_scene(1))
    assert out["heatmap"].shape == (1, 2, 8, 10) and all(torch.isfinite(v).all() for v in out.values())


def test_e3dsnn_encoder_weights_load_by_name():
    src = create_model("e3dsnn_t").state_dict()
    enc = {k: v for k, v in src.items() if k.startswith(("stem.", "stages."))}
    # At BEV stride 16 the detector holds the whole encoder: the same names, loaded as the U-Net's is.
    det = create_model("e3dsnn_det_t", bev_stride=16)
    own = det.state_dict()
    assert enc and set(enc) == {k for k in own if k.startswith(("stem.", "stages."))}
    missing, unexpected = det.load_state_dict(enc, strict=False)
    assert not unexpected and not any(k.startswith(("stem.", "stages.")) for k in missing)
    assert all(torch.equal(det.state_dict()[k], v) for k, v in enc.items())
    # At stride 8 the last stage is left out, and load_encoder_state names what it skipped.
    det8 = create_model("e3dsnn_det_t")
    skipped = det8.load_encoder_state(src)
    assert skipped == sorted(k for k in src if k.startswith(("stages.3.", "head.")))
    after = det8.state_dict()
    assert all(torch.equal(after[k], src[k]) for k in after if k.startswith(("stem.", "stages.")))
    with pytest.raises(ValueError, match="mis-shaped"):
        det8.load_encoder_state(create_model("e3dsnn_s").state_dict())


def test_binary_equals_integer(calibrate_bn):
    model = _model(calibrate=calibrate_bn)
    batch = _scene(2, seed=2)
    record_spikes(model)
    with torch.no_grad():
        a = model(batch)
        stats = spike_stats(model)
        set_spike_mode(model, "binary")
        b = model(batch)
    assert any(k.startswith("neck.") for k in stats) and any(k.startswith("head.") for k in stats)
    assert min(s["rate"] for s in stats.values()) > 0.05, (
        "the network must spike for the test to mean anything"
    )
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4)


def test_energy_meter_counts_backbone_neck_and_head(calibrate_bn):
    model = _model(calibrate=calibrate_bn)
    batch = _scene(2, seed=2)
    rep = measure_energy(model, batch)
    rows = {r.name: r for r in rep.layers}
    convs = [r for r in rep.layers if r.type == "SConv2d"]
    assert {r.name for r in convs} >= {
        "neck.reduce.conv",
        "neck.down.conv",
        "neck.up.conv",
        "head.shared.conv",
    }
    assert {f"head.branches.{k}.out" for k in ("heatmap", "offset", "z", "size", "rot")} <= set(rows)
    assert all(r.spiking and r.flops > 0 for r in convs)
    assert not rows["stem.0.conv"].spiking and rows["stages.2.down.conv"].spiking
    assert 0 < rep.energy_snn_mj < rep.energy_ann_mj
    twin = measure_energy(_model("e3dsnn_det_t_ann", calibrate=calibrate_bn), batch)
    assert twin.ann_flops == pytest.approx(rep.ann_flops) and rep.energy_snn_mj < twin.energy_snn_mj


# ----------------------------------------------------------------------------- targets, loss, decoding
def _perfect(targets: dict[str, torch.Tensor], grid: BEVGrid) -> dict[str, torch.Tensor]:
    """The maps a perfect head would output: heatmap logits of the targets, regressions at the centres."""
    B, _, H, W = targets["heatmap"].shape
    out = {"heatmap": torch.logit(targets["heatmap"].clamp(1e-6, 1 - 1e-6))}
    for name in ("offset", "z", "size", "rot"):
        t = targets[name]
        maps = torch.zeros(B, t.shape[-1], H * W)
        for b, k in targets["mask"].nonzero().tolist():
            maps[b, :, targets["index"][b, k]] = t[b, k]
        out[name] = maps.view(B, -1, H, W)
    return out


def test_targets_decode_round_trip():
    grid = BEVGrid(RANGE, VS, 8)
    boxes = torch.zeros(2, 3, 7)
    boxes[0, :2] = BOXES
    boxes[1, 0] = torch.tensor([0.3, 2.5, 1.0, 2.0, 0.9, 1.5, 3.0])
    boxes[1, 1] = torch.tensor([9.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0])  # centre off the grid
    labels = torch.tensor([[0, 1, -1], [1, 1, -1]])
    t = centerpoint_targets(boxes, labels, grid, num_classes=2)
    assert t["mask"].tolist() == [[True, True, False], [True, False, False]]
    assert t["labels"].tolist() == [[0, 1, -1], [1, -1, -1]]
    assert t["heatmap"].shape == (2, 2, 8, 10) and int((t["heatmap"] == 1).sum()) == 3
    found = decode(_perfect(t, grid), grid, topk=10, score_threshold=0.5)
    for b, want in enumerate([boxes[0, :2], boxes[1, :1]]):
        got, scores, cls = found[b]
        assert len(got) == len(want) and bool((scores > 0.99).all())
        order = torch.cdist(want[:, :2], got[:, :2]).argmin(1)
        torch.testing.assert_close(got[order], want, rtol=1e-5, atol=1e-5)
        assert cls[order].tolist() == labels[b, : len(want)].tolist()
    losses = centerpoint_loss(_perfect(t, grid), t)
    assert float(losses["reg"]) < 1e-6


def test_heatmap_gaussian_radius_and_errors():
    grid = BEVGrid(RANGE, VS, 8)
    boxes = torch.tensor([[[0.4, 0.4, 0.5, 1.6, 0.8, 1.0, 0.0]]])  # centre cell (5, 4), a 2 x 1 cell box
    t = centerpoint_targets(boxes, torch.tensor([[0]]), grid, 1, min_radius=2)
    h = t["heatmap"][0, 0]
    assert h[4, 5] == 1 and t["index"].item() == 4 * 10 + 5
    assert int((h > 0).sum()) == 25  # the radius is min_radius = 2: a 5 x 5 window
    sigma = 5 / 6
    assert float(h[4, 6]) == pytest.approx(math.exp(-1 / (2 * sigma**2)))
    torch.testing.assert_close(t["offset"][0, 0], torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="classes"):
        centerpoint_targets(boxes, torch.tensor([[1]]), grid, 1)
    with pytest.raises(ValueError, match="positive sizes"):
        centerpoint_targets(boxes * torch.tensor([1, 1, 1, 0, 1, 1, 1]), torch.tensor([[0]]), grid, 1)


def test_focal_loss_matches_centernet_formula():
    logits = torch.tensor([[[[0.3, -1.0], [2.0, -0.5]], [[1.5, 0.1], [-2.0, 0.7]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.0, 1.0]], [[0.2, 0.0], [0.9, 0.0]]]])
    p = torch.sigmoid(logits)
    pos = target == 1
    pos_sum = (torch.log(p) * (1 - p) ** 2)[pos].sum()
    neg_sum = (torch.log(1 - p) * p**2 * (1 - target) ** 4)[~pos].sum()
    torch.testing.assert_close(focal_loss(logits, target), -(pos_sum + neg_sum) / 2)
    # Without positives the negatives are not divided by anything.
    torch.testing.assert_close(
        focal_loss(logits, target * 0.5), -(torch.log(1 - p) * p**2 * (1 - target * 0.5) ** 4).sum()
    )


def test_overfits_one_scene():
    batch = _scene(1)
    model = _model().train()
    t = centerpoint_targets(batch.extras["boxes"], batch.extras["box_labels"], model.grid, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = centerpoint_loss(model(batch), t)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # train-mode BN: one scene is the whole data set, its statistics are exact
        out = model(batch)
    assert centerpoint_loss(out, t)["loss"].item() < 0.4 * first
    boxes, scores, labels = decode(out, model.grid, topk=2, score_threshold=0.3)[0]
    assert len(boxes) == 2
    target, target_labels = batch.extras["boxes"][0], batch.extras["box_labels"][0]
    match = torch.cdist(boxes[:, :2], target[:, :2]).argmin(1)
    assert sorted(match.tolist()) == [0, 1], "each box found once"
    assert float((boxes[:, :2] - target[match, :2]).abs().max()) < model.grid.cell_size[0]
    assert labels.tolist() == target_labels[match].tolist()
