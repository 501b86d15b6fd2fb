from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import svl
from svl.checkpoint import (
    check_checkpoint_complete,
    load_checkpoint,
    load_state_into,
    load_training_state,
    read_checkpoint_meta,
    save_checkpoint,
    save_training_state,
    training_state_path,
)
from svl.utils import DiskFullError


def _net(hidden: int = 8) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(6, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.Linear(hidden, 3)
    )


def test_round_trip_weights_and_meta(tmp_path: Path) -> None:
    net = _net()
    net(torch.randn(4, 6))  # move BN running stats off their init values
    meta = {"model": "toy", "config": {"hidden": 8, "betas": [0.9, 0.98]}, "step": 12}
    path = save_checkpoint(tmp_path / "ck" / "toy.safetensors", net.state_dict(), meta)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["toy.safetensors"]

    tensors, got = load_checkpoint(path)
    assert got == {**meta, "svl_version": svl.__version__}
    ref = net.state_dict()
    assert set(tensors) == set(ref)
    for k, v in ref.items():
        assert tensors[k].dtype == v.dtype and torch.equal(tensors[k], v), k
    assert read_checkpoint_meta(path) == got

    fresh = _net()
    assert not torch.equal(fresh[0].weight, net[0].weight)
    load_state_into(fresh, tensors, where=path)
    fresh.eval(), net.eval()
    x = torch.randn(5, 6)
    assert torch.equal(fresh(x), net(x))


def test_meta_is_copied_not_mutated(tmp_path: Path) -> None:
    meta = {"a": 1}
    save_checkpoint(tmp_path / "m.safetensors", {"w": torch.ones(2)}, meta)
    assert meta == {"a": 1}
    assert load_checkpoint(tmp_path / "m.safetensors")[1]["svl_version"] == svl.__version__


def test_shared_noncontiguous_and_grad_tensors(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4).requires_grad_()
    tensors = {
        "w": base,
        "tied": base,  # same storage as w (e.g. tied embeddings)
        "t": base.t(),  # non-contiguous view
        "col": base[:, 1],  # strided slice of a bigger storage
        "half": torch.ones(2, dtype=torch.float16),
        "empty": torch.zeros(0, 3),
    }
    save_checkpoint(tmp_path / "s.safetensors", tensors, {})
    got, _ = load_checkpoint(tmp_path / "s.safetensors")
    for k, v in tensors.items():
        assert torch.equal(got[k], v.detach()), k
        assert got[k].dtype == v.dtype
    assert got["half"].dtype == torch.float16


def test_save_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "a.safetensors", {"w": torch.ones(1)}, {"bad": object()})
    with pytest.raises(ValueError, match="'w' is a list"):
        save_checkpoint(tmp_path / "a.safetensors", {"w": [1.0]}, {})
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "keep.safetensors"
    save_checkpoint(path, {"w": torch.ones(3)}, {"v": 1})
    with pytest.raises(ValueError):
        save_checkpoint(path, {"w": torch.zeros(3)}, {"v": object()})
    tensors, meta = load_checkpoint(path)
    assert meta["v"] == 1 and torch.equal(tensors["w"], torch.ones(3))


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    path = tmp_path / "keep.safetensors"
    save_checkpoint(path, {"w": torch.ones(3)}, {"v": 1})

    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": torch.zeros(3)}, {"v": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]
    tensors, meta = load_checkpoint(path)
    assert meta["v"] == 1 and torch.equal(tensors["w"], torch.ones(3))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("keep", [0, 5, 100, -1])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "t.safetensors"
    save_checkpoint(path, _net().state_dict(), {"model": "toy"})
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")  # the format: u64 header length, JSON header, data
    path.write_bytes(data[:keep] if keep >= 0 else data[: len(data) - 7])
    size = path.stat().st_size
    if keep in (0, 5):
        says = "less than the 8-byte header length"
    elif keep == 100:
        says = f"the header says at least {8 + header_len}"
    else:
        says = f"the header says {len(data)}"
    expected = f"{path} is truncated: {size} bytes, {says}"
    for read in (load_checkpoint, read_checkpoint_meta, check_checkpoint_complete):
        with pytest.raises(ValueError) as err:
            read(path)
        assert str(err.value) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\x00" * 64,  # a header that is no JSON
        b"svl checkpoint? no, a text file that happens to end in .safetensors\n" * 4,  # absurd length
        b"\x00" * 64,  # a zero header length
    ],
)
def test_garbage_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "g.safetensors"
    path.write_bytes(data)
    for read in (load_checkpoint, read_checkpoint_meta):
        with pytest.raises(
            ValueError, match="not a readable safetensors checkpoint .truncated or corrupt"
        ) as err:
            read(path)
        assert "is truncated" not in str(err.value)
    assert check_checkpoint_complete(path) == path  # not cut short: corrupt in another way


def test_too_long_file_is_corrupt_not_truncated(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.ones(3)}, {})
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        load_checkpoint(path)
    assert "is truncated" not in str(err.value)


# ----------------------------------------------------------------------------- full disk
def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_during_checkpoint_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch
    from safetensors import SafetensorError

    path = tmp_path / "last.safetensors"
    tensors = {"w": torch.ones(1000), "b": torch.zeros(10)}
    save_checkpoint(path, tensors, {"v": 1})
    full_size = path.stat().st_size

    def full_disk(tensors, filename, metadata=None):  # what the Rust writer raises on ENOSPC
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1234, 1234))
    with pytest.raises(DiskFullError) as err:
        save_checkpoint(path, {k: v + 1 for k, v in tensors.items()}, {"v": 2})
    e = err.value
    assert isinstance(e, ValueError) and e.path == path and e.free == 1234 and e.existed
    assert full_size <= e.needed <= full_size + 500  # the estimate is close to the real file size
    assert str(e) == (
        f"cannot write {path}: no space left on device (about {e.needed / 1000:.1f} KB needed, "
        "1.2 KB free there); the previous last.safetensors is intact"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # temp file removed
    got, meta = load_checkpoint(path)
    assert meta["v"] == 1 and torch.equal(got["w"], tensors["w"])


def test_full_disk_during_training_state_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_training_state(tmp_path / "last.state.pt", {"a": torch.ones(500)})
    old_size = path.stat().st_size

    def partial_then_full(obj, fh):
        fh.write(b"x" * 100)
        _no_space()

    monkeypatch.setattr(torch, "save", partial_then_full)
    with pytest.raises(DiskFullError, match=r"last\.state\.pt: no space left on device") as err:
        save_training_state(path, {"a": torch.zeros(500)})
    assert err.value.needed == max(500 * 4, old_size)  # the arrays in it, or the earlier file
    assert "the previous last.state.pt is intact" in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["last.state.pt"]
    monkeypatch.undo()
    assert torch.equal(load_training_state(path)["a"], torch.ones(500))


def test_non_svl_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(ValueError, match="not an svl checkpoint"):
        load_checkpoint(path)
    save_file({"w": torch.ones(2)}, str(path), metadata={"svl": "{oops"})
    with pytest.raises(ValueError, match="invalid JSON"):
        load_checkpoint(path)
    save_file({"w": torch.ones(2)}, str(path), metadata={"svl": json.dumps([1, 2])})
    with pytest.raises(ValueError, match="JSON object"):
        read_checkpoint_meta(path)


def test_load_state_into_mismatch_lists_everything(tmp_path: Path) -> None:
    src = _net(hidden=8).state_dict()
    src["extra.weight"] = torch.ones(1)
    del src["2.bias"]
    dst = _net(hidden=16)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_state_into(dst, src, where="ck.safetensors")
    msg = str(err.value)
    assert msg.startswith("ck.safetensors: checkpoint does not match Sequential")
    assert "1 missing: 2.bias" in msg
    assert "1 unexpected: extra.weight" in msg
    assert "0.weight (checkpoint (8, 6) vs model (16, 6))" in msg
    n_misshaped = sum(1 for k in before if k in src and src[k].shape != before[k].shape)
    assert f"{n_misshaped} mis-shaped" in msg and f"({n_misshaped - 5} more)" in msg
    # Nothing was loaded.
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k])


def test_load_state_into_exact_match_and_dtype_cast() -> None:
    src = {k: v.double() if v.is_floating_point() else v for k, v in _net().state_dict().items()}
    dst = load_state_into(_net(), src)
    assert dst[0].weight.dtype == torch.float32
    assert torch.allclose(dst[0].weight, src["0.weight"].float())


def test_training_state_round_trip(tmp_path: Path) -> None:
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(4, 6)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "epoch": 3, "seen": [1, 2]}
    path = training_state_path(tmp_path / "last.safetensors")
    assert path == tmp_path / "last.state.pt"
    assert training_state_path("x/model.bin") == Path("x/model.bin.state.pt")
    save_training_state(path, state)
    got = load_training_state(path)
    assert got["epoch"] == 3 and got["seen"] == [1, 2] and torch.equal(got["rng"], state["rng"])
    opt2 = torch.optim.AdamW(_net().parameters(), lr=1e-3)
    opt2.load_state_dict(got["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_training_state_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_training_state(tmp_path / "x.state.pt")
    path = save_training_state(tmp_path / "x.state.pt", {"a": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"x\.state\.pt.*truncated or corrupt"):
        load_training_state(path)
