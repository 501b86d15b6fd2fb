"""Registry: names, errors with suggestions, pretrained tags, checkpoints, input contracts, `svl models`."""

from __future__ import annotations

import pytest
import torch

import svl
from svl.models import Contract, check_contract, create_model, get_pretrained, list_models, register_model

ALL = [
    f"{a}{s}"
    for a in (
        "e3dsnn_t",
        "e3dsnn_s",
        "e3dsnn_l",
        "e3dsnn_h",
        "spike_pointformer_l",
        "spike_pointnet",
        "e3dsnn_unet_t",
        "e3dsnn_unet_s",
        "e3dsnn_unet_l",
        "e3dsnn_det_t",
        "e3dsnn_det_s",
        "spikformer_t",
        "spikformer_s",
        "spikformer_tiny",
        "spikformer_4_384",
        "spikformer_8_384",
        "spikformer_8_512",
        "spikformer_8_768",
    )
    for s in ("", "_ann")
]


def test_list_models_and_patterns():
    assert set(ALL) <= set(list_models())
    assert list_models("e3dsnn_t*") == ["e3dsnn_t", "e3dsnn_t_ann"]
    assert list_models("*_ann") == sorted(n for n in ALL if n.endswith("_ann"))
    tags = list_models(pretrained=True)
    for size in "tslh":
        assert f"e3dsnn_{size}.mn40_zsl_minilm" in tags
    assert svl.list_models("spike_pointnet*") == ["spike_pointnet", "spike_pointnet_ann"]


def test_unknown_name_suggests_close_match():
    with pytest.raises(ValueError, match="unknown model 'e3dsnn_tt'.*did you mean 'e3dsnn_t'"):
        create_model("e3dsnn_tt")
    with pytest.raises(ValueError, match="unknown pretrained tag.*mn40_zsl_minilm"):
        create_model("e3dsnn_t.mn40_zsl_minlm")
    with pytest.raises(ValueError, match="bad options for model 'e3dsnn_t'"):
        create_model("e3dsnn_t", no_such_option=1)
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda **kw: None, name="e3dsnn_t")


def test_create_sets_contract_and_overrides():
    m = create_model("e3dsnn_s", out_dim=384, voxel_size=0.05)
    assert m.out_dim == 384 and m.head.out_channels == 384 and m.model_name == "e3dsnn_s"
    cfg = m.pretrained_cfg
    assert cfg["voxel_size"] == 0.05 and cfg["embed_dim"] == 384 and cfg["gravity_axis"] == "z"
    assert cfg["T"] == 1 and cfg["D"] == 4 and cfg["color"] == "none"
    assert svl.create_model("spike_pointnet", out_dim=7).out_dim == 7


def test_contract_diff_names_every_difference():
    want = get_pretrained("e3dsnn_t.mn40_zsl_minilm").contract
    got = {"gravity_axis": "y", "color": "rgb255", "num_points": 1024, "voxel_size": 0.02, "T": None}
    diffs = want.diff(got)
    assert len(diffs) == 2
    assert any("z-up" in d and "y-up" in d for d in diffs)
    assert any("[0, 255]" in d and "constant 0.4" in d for d in diffs)
    with pytest.raises(ValueError, match=r"2 difference\(s\)") as e:
        check_contract(want, got, where="e3dsnn_t.mn40_zsl_minilm")
    assert "gravity_axis" in str(e.value) and "color" in str(e.value)
    check_contract(want, {"gravity_axis": "z", "voxel_size": 0.02})  # unknown fields are not compared
    rgb = Contract(color="rgb01")
    assert "divide colours by 255" in rgb.diff({"color": "rgb255"})[0]
    assert "voxel_size" in want.diff({"voxel_size": 0.01})[0]
    with pytest.raises(ValueError, match="unknown contract fields"):
        Contract.from_dict({"gravity": "z"})
    with pytest.raises(ValueError, match="gravity_axis"):
        Contract(gravity_axis="up")


def test_checkpoint_round_trip(tmp_path, model_checkpoint, random_batch):
    m, path = model_checkpoint(tmp_path / "e3dsnn_t.safetensors", contract={"color": "rgb01"}, out_dim=12)
    m2 = create_model("e3dsnn_t", pretrained=path)
    assert m2.out_dim == 12 and m2.pretrained_cfg["color"] == "rgb01"
    x = random_batch(2, 500).xyz
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2.eval()(x))
    state, state2 = m.state_dict(), m2.state_dict()
    assert len(state) > 0 and state.keys() == state2.keys()
    for k, v in state.items():
        assert torch.equal(v, state2[k]), k
    # pretraining checkpoints keep the encoder under "encoder." next to projections
    _, p2 = model_checkpoint(
        tmp_path / "pre.safetensors",
        prefix="encoder.",
        extra={"text_proj.weight": torch.ones(3, 3)},
        out_dim=12,
    )
    assert torch.equal(create_model("e3dsnn_t", pretrained=p2).head.weight, m.head.weight)


def test_checkpoint_errors(tmp_path, model_checkpoint):
    _, path = model_checkpoint(tmp_path / "e3dsnn_t.safetensors", contract={"color": "rgb01"}, out_dim=12)
    with pytest.raises(ValueError, match="holds architecture 'e3dsnn_t'.*create_model\\('e3dsnn_t'"):
        create_model("spike_pointnet", pretrained=path)
    with pytest.raises(ValueError, match="mis-shaped"):
        create_model("e3dsnn_t", pretrained=path, out_dim=13)
    with pytest.raises(ValueError, match="(?s)input contract mismatch.*color"):
        create_model("e3dsnn_t", pretrained=path, data_contract={"color": "none", "gravity_axis": "z"})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.safetensors.*truncated"):
        create_model("e3dsnn_t", pretrained=cut)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        create_model("e3dsnn_t", pretrained=tmp_path / "nope.safetensors")


def test_pretrained_tag_lookup_and_contract_check(svl_cache, model_checkpoint):
    entry = get_pretrained("e3dsnn_t.mn40_zsl_minilm")
    with pytest.raises(FileNotFoundError, match="put the file at .*e3dsnn_t.mn40_zsl_minilm.safetensors"):
        create_model("e3dsnn_t.mn40_zsl_minilm")
    assert entry.path().parent == svl_cache / "models"
    src, _ = model_checkpoint(entry.path(), "e3dsnn_t", **entry.model_cfg)
    m = create_model("e3dsnn_t", pretrained="mn40_zsl_minilm")
    full = create_model("e3dsnn_t", pretrained="e3dsnn_t.mn40_zsl_minilm")  # "arch.tag" works too
    assert torch.equal(full.head.weight, src.head.weight)
    assert m.out_dim == 384 and m.pretrained_cfg == entry.contract.to_dict()
    assert torch.equal(m.head.weight, src.head.weight)
    ok = {"gravity_axis": "z", "color": "none", "num_points": 1024, "voxel_size": 0.02}
    create_model("e3dsnn_t.mn40_zsl_minilm", data_contract=ok)
    with pytest.raises(ValueError) as e:
        create_model("e3dsnn_t.mn40_zsl_minilm", data_contract=dict(ok, gravity_axis="y", color="rgb255"))
    msg = str(e.value)
    assert "e3dsnn_t.mn40_zsl_minilm.safetensors" in msg and "y-up" in msg and "[0, 255]" in msg


def test_cli_models(run_cli):
    code, out, _ = run_cli("models", "--params", "e3dsnn_t*")
    assert code == 0
    assert "e3dsnn_t " in out and "1.87 M" in out and "e3dsnn_t_ann" in out
    assert "e3dsnn_t.mn40_zsl_minilm" in out and "teacher=minilm+efficientnet-lite0" in out
    assert run_cli("models", "no_such_*")[0] == 2


def test_import_svl_stays_light(run_python):
    code, out, err = run_python(
        "-c", "import sys, svl; assert callable(svl.create_model); print('torch' in sys.modules)"
    )
    assert code == 0, err
    assert out.strip() == "False"


def test_every_builtin_model_declares_what_it_is() -> None:
    """Families and abilities come from the registry entry, never from the name."""
    from svl.models import model_info

    for name in list_models():
        info = model_info(name)
        assert info.family and info.inputs in ("points", "images"), name
        if info.encoder is not None:  # a U-Net / detector whose encoder part loads from a registered encoder
            assert info.encoder in list_models() and info.encoder_prefixes == ("stem.", "stages."), name
            assert model_info(info.encoder).voxel and model_info(info.encoder).encoder is None
    assert model_info("e3dsnn_unet_s_ann").encoder == "e3dsnn_s_ann"
    assert model_info("spikformer_s").inputs == "images" and not model_info("spike_pointnet").voxel


def test_load_weights_parts_model_encoder_stem(tmp_path) -> None:
    """One loader, three parts: every tensor, all but the head, or only the E-3DSNN stem and stages."""
    from svl.checkpoint import save_checkpoint
    from svl.models import load_weights

    torch.manual_seed(0)
    src = create_model("e3dsnn_t", out_dim=8)
    path = save_checkpoint(
        tmp_path / "enc.safetensors", {f"encoder.{k}": v for k, v in src.state_dict().items()},
        {"model": "e3dsnn_t", "model_cfg": {"out_dim": 8, "voxel_size": 0.02}},
    )  # fmt: skip
    torch.manual_seed(1)
    clf = create_model("e3dsnn_t", out_dim=3)
    head_before = clf.head.weight.clone()
    load_weights(clf, path, "e3dsnn_t", part="encoder", model_cfg={"voxel_size": 0.02}, key="init")
    assert torch.equal(clf.head.weight, head_before)  # the new 3-way head stays
    assert all(
        torch.equal(v, src.state_dict()[k]) for k, v in clf.state_dict().items() if not k.startswith("head.")
    )
    with pytest.raises(
        ValueError, match=r"init: .*enc.safetensors was trained with other input settings .*voxel_size"
    ):
        load_weights(clf, path, "e3dsnn_t", part="encoder", model_cfg={"voxel_size": 0.05}, key="init")
    unet = create_model("e3dsnn_unet_t", num_classes=4)
    load_weights(unet, path, "e3dsnn_unet_t", part="stem", key="init")
    for k, v in unet.state_dict().items():
        if k.startswith(("stem.", "stages.")):
            assert torch.equal(v, src.state_dict()[k]), k
    with pytest.raises(
        ValueError, match=r"init: .*enc.safetensors holds a 'e3dsnn_t' encoder, not the 'e3dsnn_s' weights"
    ):
        load_weights(
            create_model("e3dsnn_unet_s", num_classes=4), path, "e3dsnn_unet_s", part="stem", key="init"
        )
    with pytest.raises(ValueError, match="part must be one of"):
        load_weights(clf, path, "e3dsnn_t", part="head")
