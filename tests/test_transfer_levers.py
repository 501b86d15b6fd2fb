"""Issue 30's transfer levers: how much of a pretrained encoder a fine-tune loads (`transfer.stages`),
in which frame (`transfer.xyz_scale`), and the pretraining's extra augmentation (`data.augment_extra`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svl.checkpoint import save_checkpoint
from svl.config import load_config
from svl.data import build_dataset, collate_points
from svl.models import create_model, load_weights
from svl.tasks.base import TransferSection
from svl.tasks.finetune import FinetuneConfig
from svl.tasks.pretrain import PretrainConfig

TINY = {"stem_channels": 4, "channels": [4, 8, 8, 8], "depth": 1, "out_dim": 16}


@pytest.fixture()
def pretrained(tmp_path, calibrate_bn, shared_data):
    torch.manual_seed(0)
    src = create_model("e3dsnn_t", **TINY, voxel_size=0.02)
    # BN statistics of real clouds: it fires as a trained network does, and a wrong copy shows
    ds = build_dataset("modelnet40", "train", root=shared_data / "modelnet40", num_points=512)
    calibrate_bn(src, collate_points([ds[i] for i in range(8)]))
    meta = {"model": "e3dsnn_t", "model_cfg": {**TINY, "voxel_size": 0.02}, "kind": "svl-pretrain"}
    return src, save_checkpoint(
        tmp_path / "p.safetensors", {f"encoder.{k}": v for k, v in src.state_dict().items()}, meta
    )


def _fresh(**kw):
    torch.manual_seed(1)
    return create_model("e3dsnn_t", **{**TINY, **kw})


@pytest.mark.parametrize("stages", [0, 2, 4, None])
def test_stages_loads_the_stem_and_the_first_k_stages(pretrained, stages) -> None:
    src, path = pretrained
    dst = _fresh()
    built = {k: v.clone() for k, v in dst.state_dict().items()}
    load_weights(dst, path, "e3dsnn_t", part="encoder", stages=stages)
    k_all = 4 if stages is None else stages
    for k, v in dst.state_dict().items():
        if k.startswith("head."):
            want = built[k]
        elif k.startswith("stem.") or any(k.startswith(f"stages.{i}.") for i in range(k_all)):
            want = src.state_dict()[k]
        else:
            want = built[k]
        assert torch.equal(v, want), k


def test_stages_on_the_unet_stem_part(pretrained) -> None:
    src, path = pretrained
    net = create_model("e3dsnn_unet_t", num_classes=5, stem_channels=4, channels=[4, 8, 8, 8], depth=1)
    built = {k: v.clone() for k, v in net.state_dict().items()}
    load_weights(net, path, "e3dsnn_unet_t", part="stem", stages=1)
    sd = net.state_dict()
    assert torch.equal(sd["stem.0.conv.weight"], src.state_dict()["stem.0.conv.weight"])
    s0 = [k for k in sd if k.startswith("stages.0.")]
    s1 = [k for k in sd if k.startswith("stages.1.")]
    assert s0 and s1
    assert all(torch.equal(sd[k], src.state_dict()[k]) for k in s0)
    assert all(torch.equal(sd[k], built[k]) for k in s1)


def test_stages_out_of_range_names_the_key_and_the_file(pretrained) -> None:
    _, path = pretrained
    with pytest.raises(
        ValueError, match=r"init: transfer.stages must be 0 \(stem only\) to 4 .*p.safetensors"
    ):
        load_weights(_fresh(), path, "e3dsnn_t", part="encoder", stages=5, key="init")


def test_xyz_scale_makes_a_scaled_frame_look_like_the_pretraining_frame(pretrained, shared_data) -> None:
    """Closed form: the checkpoint on cloud X at voxel v equals the rescaled load on s*X at voxel s*v
    (same voxel indices, xyz features s times larger, their weights s times smaller)."""
    src, path = pretrained
    s = 3.0
    ds = build_dataset("modelnet40", "test", root=shared_data / "modelnet40", num_points=512)
    samples = [ds[i] for i in range(4)]
    scaled = [{**x, "xyz": (x["xyz"] * s).astype(np.float32)} for x in samples]
    a = create_model("e3dsnn_t", **TINY, voxel_size=0.02)
    load_weights(a, path, "e3dsnn_t")
    b = create_model("e3dsnn_t", **TINY, voxel_size=0.02 * s)
    load_weights(b, path, "e3dsnn_t", xyz_scale=s)
    a.eval(), b.eval()
    with torch.no_grad():
        ya, yb = a(collate_points(samples)), b(collate_points(scaled))
    assert ya.std(0).mean() > 0.05  # the network fires: the outputs differ from cloud to cloud
    torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-5)
    c = create_model("e3dsnn_t", **TINY, voxel_size=0.02 * s)
    load_weights(c, path, "e3dsnn_t")  # without the rescale the stem sees larger inputs
    with torch.no_grad():
        assert (c.eval()(collate_points(scaled)) - ya).abs().max() > 0.05


def test_transfer_section_validates_and_reaches_the_config() -> None:
    with pytest.raises(ValueError, match="transfer.xyz_scale must be a positive number"):
        TransferSection(xyz_scale=0.0)
    with pytest.raises(ValueError, match="transfer.stages must be None"):
        TransferSection(stages=-1)
    cfg = load_config(FinetuneConfig, overrides=["transfer.stages=1", "transfer.xyz_scale=3"])
    assert cfg.transfer.kwargs() == {"stages": 1, "xyz_scale": 3.0}


def test_augment_extra_appends_to_the_pretraining_augmentation(shared_data) -> None:
    cfg = load_config(
        PretrainConfig,
        overrides=["data.augment_extra=[{name: random_scale, low: 0.1, high: 0.1}]"],
    )
    root = shared_data / "modelnet40"
    plain = build_dataset("modelnet40", "train", root=root, num_points=256, augment=True)
    small = build_dataset(
        "modelnet40", "train", root=root, num_points=256, augment=True, extra_augment=cfg.data.augment_extra
    )
    a, b = plain[0]["xyz"], small[0]["xyz"]  # same seeded stream, then a 0.1 shrink
    np.testing.assert_allclose(b, a * 0.1, rtol=1e-5, atol=1e-6)


def test_lr_scale_gives_the_loaded_weights_their_own_learning_rate() -> None:
    from svl.models.wrappers import Classifier
    from svl.train.trainer import param_groups

    enc = _fresh()
    model = Classifier(enc)
    plain = param_groups(model, 0.05)
    assert [g["weight_decay"] for g in plain] == [0.05, 0.0] and all("lr" not in g for g in plain)
    scales = TransferSection(stages=1, lr_scale=0.1).lr_scale_of(model, enc, "p.safetensors")
    assert scales and all(n.startswith(("encoder.stem.", "encoder.stages.0.")) for n in scales)
    n_loaded = sum(1 for _ in enc.stem.parameters()) + sum(1 for _ in enc.stages[0].parameters())
    assert len(scales) == n_loaded
    groups = param_groups(model, 0.05, scales, lr=2e-3)
    assert [g.get("lr") for g in groups] == [None, None, pytest.approx(2e-4), pytest.approx(2e-4)]
    by_id = {id(p): g.get("lr") for g in groups for p in g["params"]}
    assert by_id[id(enc.stem[0].conv.weight)] == pytest.approx(2e-4)
    assert by_id[id(enc.stages[1].down.conv.weight)] is None and by_id[id(enc.head.weight)] is None
    assert sum(len(g["params"]) for g in groups) == sum(1 for _ in model.parameters())
    assert TransferSection().lr_scale_of(model, enc, "p.safetensors") == {}
    assert TransferSection().lr_scale_of(model, enc, "scratch") == {}
    with pytest.raises(ValueError, match=r"transfer.xyz_scale=3.0: sets how an init .*give init=PATH"):
        TransferSection(xyz_scale=3.0).lr_scale_of(model, enc, "scratch")
    with pytest.raises(ValueError, match="transfer.lr_scale must be a positive number"):
        TransferSection(lr_scale=0)
    opt = torch.optim.AdamW(groups, lr=2e-3)  # the schedule scales each group's own lr
    from svl.train.schedule import WarmupCosineLR

    sched = WarmupCosineLR(opt, 10, 0, min_lr=0.0)  # (min_lr is a floor in absolute terms)
    assert opt.param_groups[2]["lr"] == pytest.approx(opt.param_groups[0]["lr"] * 0.1)
    opt.step()
    sched.step()
    assert opt.param_groups[2]["lr"] == pytest.approx(opt.param_groups[0]["lr"] * 0.1)


def test_augment_extra_needs_the_augmenting_default_pipeline(shared_data) -> None:
    extra = [{"name": "random_scale", "low": 0.5, "high": 0.5}]
    root = shared_data / "modelnet40"
    with pytest.raises(ValueError, match="modelnet40: extra augmentations add to the augmenting default"):
        build_dataset("modelnet40", "train", root=root, num_points=256, extra_augment=extra)
    with pytest.raises(ValueError, match="give augment=True and no explicit transforms"):
        build_dataset("modelnet40", "train", root=root, transforms=[], augment=True, extra_augment=extra)


def test_scene_context_stands_a_partial_view_on_a_floor() -> None:
    from svl.data.transforms import build_transforms

    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(400, 3)).astype(np.float32) + np.float32(5)  # off-centre, z well above 0
    normals = np.tile(np.float32([1, 0, 0]), (400, 1))
    spec = {"name": "scene_context", "floor_share": [0.4, 0.4], "extent": [2, 2], "crop": [0.5, 0.5]}
    spec["crop_p"] = 1
    out = build_transforms([spec])({"xyz": xyz, "normals": normals, "segment": np.arange(400)}, rng)
    assert out["xyz"].shape == (400, 3) and out["xyz"].dtype == np.float32
    floor = out["segment"] == -1
    assert floor.sum() == 160  # the share, exactly, with the count unchanged
    obj = out["segment"][~floor]
    np.testing.assert_array_equal(out["xyz"][~floor], xyz[obj])  # object points are untouched
    np.testing.assert_array_equal(out["normals"][floor], np.tile([0, 0, 1], (160, 1)))
    assert len(np.unique(obj)) == 200  # the crop kept half the cloud, every point of it (240 with repeats)
    # the crop is a ball: every kept point is nearer its centre than every dropped one, for some centre
    kept = np.isin(np.arange(400), obj)
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=2)
    assert (d[kept].max(0) < d[~kept].min(0)).any()
    # the floor lies flat at the object's lowest point, centred under its footprint, 2x its radius
    f, p = out["xyz"][floor], xyz[np.unique(obj)]
    np.testing.assert_allclose(f[:, 2], p[:, 2].min())
    centre = (p[:, :2].min(0) + p[:, :2].max(0)) / 2
    half = 2 * np.linalg.norm(p[:, :2] - centre, axis=1).max()
    off = np.abs(f[:, :2] - centre)
    assert (off <= half + 1e-4).all() and (off.max(0) > 0.8 * half).all()


def test_scene_context_refuses_bad_settings_and_boxes() -> None:
    from svl.data.transforms import build_transforms

    with pytest.raises(ValueError, match="scene_context: need floor_share"):
        build_transforms([{"name": "scene_context", "floor_share": [0.5, 1.0]}])
    with pytest.raises(ValueError, match="scene_context: need"):
        build_transforms([{"name": "scene_context", "crop": [0, 1]}])
    sample = {"xyz": np.zeros((10, 3), np.float32), "boxes": np.zeros((1, 7)), "box_labels": np.zeros(1)}
    with pytest.raises(ValueError, match="scene_context: the sample carries 3D boxes"):
        build_transforms(["scene_context"])(sample, np.random.default_rng(0))


def test_the_scene_pretraining_config_stands_real_shapes_on_a_floor(shared_data) -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "pretrain_labelfree_scene.yaml"
    cfg = load_config(PretrainConfig, path)
    ds = build_dataset(
        "modelnet40", "train", root=shared_data / "modelnet40", num_points=512, augment=True,
        extra_augment=cfg.data.augment_extra,
    )  # fmt: skip
    for i in range(4):
        xyz = ds[i]["xyz"]
        assert xyz.shape == (512, 3)
        on_floor = np.isclose(xyz[:, 2], xyz[:, 2].min())
        assert 0.3 * 512 - 1 <= on_floor.sum() <= 0.6 * 512 + 8  # the share, plus object points at z min


def test_scene_context_crops_distinct_points_after_dropout() -> None:
    """point_dropout fills dropped slots with copies of one point; a crop centred there must still
    hold a part of the object, not only the copies (the first version left a one-point object)."""
    from svl.data.transforms import build_transforms

    xyz = np.random.default_rng(4).normal(size=(100, 3)).astype(np.float32)
    xyz[1:81] = xyz[0]  # 80% dropped, as point_dropout leaves them
    spec = {"name": "scene_context", "floor_share": [0.0, 0.0], "crop": [0.6, 0.6], "crop_p": 1}
    for seed in range(20):
        out = build_transforms([spec])({"xyz": xyz, "segment": np.arange(100)}, np.random.default_rng(seed))
        assert len(np.unique(out["xyz"], axis=0)) == 12  # 60% of the 20 distinct points, every time
