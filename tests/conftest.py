"""Shared pytest fixtures and helpers for the svl test suite.

Why one place: tests agree on where real data is, how the CLI is driven and what a small random input
looks like, and a change to any of these lands once. Helpers are fixtures (pytest's way to share code
between test files); those without state return the helper function itself.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from svl.utils import data_root, repo_root, seed_everything

pytest_plugins = ["pytester"]  # tests of the fixtures themselves run a small pytest session

RunResult = tuple[int, str, str]  # (exit code, stdout, stderr)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same RNG state, so random inputs are reproducible."""
    seed_everything(0)


# ----------------------------------------------------------------------------- data and caches
@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real shared data folder, the one way tests find it.

    $SVL_DATA when set (a folder that does not exist is an error, not a silent skip of every data
    test); else ../shared/data as svl.utils.data_root finds it; tests that need it skip where absent.
    """
    if os.environ.get("SVL_DATA"):
        return data_root(required=True)
    root = data_root(required=False)
    if root is None:
        pytest.skip("shared data not found (set SVL_DATA)")
    return root


@pytest.fixture(scope="session")
def modelnet_clouds(shared_data: Path) -> Callable[[int], tuple[torch.Tensor, np.ndarray]]:
    """`modelnet_clouds(n)`: n real ModelNet40 test clouds spread evenly over the split, with labels.

    As stored (z-up, unit sphere, 1,024 points, float32); evenly spread indices cover many classes.
    """
    with np.load(shared_data / "modelnet40" / "modelnet40_pcd1024_test.npz") as z:
        points, labels = z["points"], z["labels"]

    def clouds(n: int = 8) -> tuple[torch.Tensor, np.ndarray]:
        idx = np.linspace(0, len(labels) - 1, n).astype(int)
        return torch.from_numpy(points[idx].copy()), labels[idx].copy()

    return clouds


@pytest.fixture
def svl_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty SVL_CACHE for tests that must not touch the user's cache."""
    cache = tmp_path / "svl-cache"
    monkeypatch.setenv("SVL_CACHE", str(cache))
    return cache


# ----------------------------------------------------------------------------- running svl
@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., RunResult]:
    """`run_cli(*args)`: `svl ARGS` in this process -> (exit code, stdout, stderr).

    argparse's exits (--help, --version, usage errors) become exit codes, as in a shell.
    """

    def run(*args: str | os.PathLike[str]) -> RunResult:
        from svl import cli

        capsys.readouterr()  # only what this command writes
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def run_python() -> Callable[..., RunResult]:
    """`run_python(*args, env=None)`: `python ARGS` in a fresh interpreter -> (code, stdout, stderr).

    For what only a new process shows (entry points, what an import pulls in). `env` updates the
    current environment; a None value removes that variable.
    """

    def run(
        *args: str | os.PathLike[str], env: Mapping[str, str | None] | None = None, timeout: float = 120
    ) -> RunResult:
        full_env = dict(os.environ)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        r = subprocess.run(
            [sys.executable, *map(str, args)],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=repo_root(),
        )
        return r.returncode, r.stdout, r.stderr

    return run


# ----------------------------------------------------------------------------- small inputs
def _random_sites(
    batch: int = 2, grid: int = 7, p: float = 0.2, seed: int = 0, offset: int = 0
) -> torch.Tensor:
    """Occupied voxel sites (b, x, y, z) of a random grid, in sorted order, shifted by -offset."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(batch, grid, grid, grid, generator=g) < p).nonzero()
    return coords - torch.tensor([0, offset, offset, offset]) if offset else coords


@pytest.fixture(scope="session")
def random_sites() -> Callable[..., torch.Tensor]:
    """`random_sites(batch=2, grid=7, p=0.2, seed=0, offset=0)`: random sparse sites, own generator."""
    return _random_sites


def _point_batch(
    xyz: torch.Tensor,
    feats: torch.Tensor | None = None,
    *,
    sparse: Any = None,
    labels: torch.Tensor | None = None,
    **extras: torch.Tensor,
) -> Any:
    """A PointBatch around given (B, N, 3) clouds; feats default to xyz + the missing-colour constant."""
    from svl.conventions import MISSING_COLOR
    from svl.data.batch import PointBatch

    if feats is None:
        feats = torch.cat([xyz, torch.full_like(xyz, MISSING_COLOR)], -1)
    index = torch.arange(len(xyz))
    return PointBatch(xyz=xyz, feats=feats, labels=labels, index=index, sparse=sparse, extras=extras)


@pytest.fixture(scope="session")
def point_batch() -> Callable[..., Any]:
    """`point_batch(xyz, feats=None, *, sparse=None, labels=None, **extras)`: a PointBatch by hand."""
    return _point_batch


@pytest.fixture(scope="session")
def random_batch() -> Callable[..., Any]:
    """`random_batch(n=2, points=256, **extras)`: a PointBatch of uniform clouds in [-1, 1]^3.

    Drawn from the global RNG, which every test starts from the same seed.
    """

    def make(n: int = 2, points: int = 256, **extras: torch.Tensor) -> Any:
        return _point_batch(torch.rand(n, points, 3) * 2 - 1, **extras)

    return make


@pytest.fixture(scope="session")
def calibrate_bn() -> Callable[[nn.Module, Any], nn.Module]:
    """`calibrate_bn(model, x)`: BN running stats from one batch, then eval mode.

    An untrained network's BN statistics are at their init values and it hardly spikes; statistics of
    real inputs (cumulative average of the one batch) make it fire as a trained one would.
    """

    def calibrate(model: nn.Module, x: Any) -> nn.Module:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        with torch.no_grad():
            model(x)
        return model.eval()

    return calibrate


@pytest.fixture(scope="session")
def model_checkpoint() -> Callable[..., tuple[nn.Module, Path]]:
    """`model_checkpoint(path, name, *, seed=1, prefix="", extra=None, contract=None, meta=None, **cfg)`.

    Builds registered model `name` under `seed` and saves it as an svl checkpoint (meta: model,
    model_cfg, then `meta`; `contract` overrides on the model's own contract; `prefix` such as
    "encoder." and `extra` tensors as a pretraining run writes them). Returns (model in eval mode, path).
    """

    def save(
        path: Path,
        name: str = "e3dsnn_t",
        *,
        seed: int = 1,
        prefix: str = "",
        extra: Mapping[str, torch.Tensor] | None = None,
        contract: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        **cfg: Any,
    ) -> tuple[nn.Module, Path]:
        from svl.checkpoint import save_checkpoint
        from svl.models import create_model

        torch.manual_seed(seed)
        model = create_model(name, **cfg).eval()
        full_meta: dict[str, Any] = {"model": name, "model_cfg": cfg, **(meta or {})}
        if contract is not None:
            full_meta["contract"] = dict(model.pretrained_cfg, **contract)
        tensors = {f"{prefix}{k}": v for k, v in model.state_dict().items()} | dict(extra or {})
        return model, save_checkpoint(path, tensors, full_meta)

    return save


# ----------------------------------------------------------------------------- small files
@dataclass(frozen=True)
class PlyWriter:
    """Writes small PLY files (ascii, binary either endian) from fixed sample arrays, for reader tests."""

    xyz: np.ndarray
    normals: np.ndarray
    rgb8: np.ndarray

    def __call__(
        self,
        path: Path,
        fmt: str,
        rgb: bool = False,
        normals: bool = False,
        faces: Any = None,
        xyz: np.ndarray | None = None,
    ) -> Path:
        xyz = self.xyz if xyz is None else xyz
        props = [("x", "f4"), ("y", "f4"), ("z", "f4")]
        if normals:
            props += [("nx", "f4"), ("ny", "f4"), ("nz", "f4")]
        if rgb:
            props += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        names = {"f4": "float", "u1": "uchar"}
        head = [f"ply\nformat {fmt} 1.0\ncomment made by svl tests\nelement vertex {len(xyz)}"]
        head += [f"property {names[t]} {n}" for n, t in props]
        if faces is not None:
            head += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        head += ["end_header\n"]
        arr = np.empty(len(xyz), dtype=[(n, t) for n, t in props])
        arr["x"], arr["y"], arr["z"] = xyz.T
        if normals:
            arr["nx"], arr["ny"], arr["nz"] = self.normals[: len(xyz)].T
        if rgb:
            arr["red"], arr["green"], arr["blue"] = self.rgb8[: len(xyz)].T
        with open(path, "wb") as fh:
            fh.write("\n".join(head).encode())
            if fmt == "ascii":
                for row in arr:
                    fh.write((" ".join(repr(v.item()) for v in row) + "\n").encode())
                for f in faces if faces is not None else []:
                    fh.write(f"{len(f)} {' '.join(map(str, f))}\n".encode())
            else:
                bo = "<" if fmt == "binary_little_endian" else ">"
                fh.write(arr.astype(arr.dtype.newbyteorder(bo)).tobytes())
                for f in faces if faces is not None else []:
                    fh.write(struct.pack(f"{bo}B{len(f)}i", len(f), *f))
        return path


@pytest.fixture(scope="session")
def write_ply() -> PlyWriter:
    """`write_ply(path, fmt, rgb=False, normals=False, faces=None, xyz=None)`; arrays as .xyz/.normals/.rgb8.

    50 points; the arrays are those test_data_io.py draws (default_rng(0): xyz, normals, rgb).
    """
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    nrm = rng.normal(size=(50, 3))
    nrm = (nrm / np.linalg.norm(nrm, axis=1, keepdims=True)).astype(np.float32)
    rgb8 = rng.integers(0, 256, size=(50, 3)).astype(np.uint8)
    return PlyWriter(xyz, nrm, rgb8)


# ----------------------------------------------------------------------------- small files
@dataclass(frozen=True)
class CubeMesh:
    """A unit cube centred at 0: 8 vertices, 6 quads (and the 12 triangles that split them)."""

    v: np.ndarray
    quads: list[list[int]]

    @property
    def tris(self) -> list[list[int]]:
        return [[q[0], q[k], q[k + 1]] for q in self.quads for k in (1, 2)]


@pytest.fixture(scope="session")
def cube_mesh() -> CubeMesh:
    v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], np.float64)
    return CubeMesh(v, [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]])


def lzf_literals(data: bytes) -> bytes:
    """A valid LZF stream made only of literal runs (<= 32 bytes each)."""
    out = bytearray()
    for i in range(0, len(data), 32):
        chunk = data[i : i + 32]
        out += bytes([len(chunk) - 1]) + chunk
    return bytes(out)


def _write_pcd(path: Path, mode: str, xyz: np.ndarray, rgb8: np.ndarray) -> Path:
    """A PCD file (ascii, binary or binary_compressed) of points xyz with packed colours rgb8."""
    packed = (rgb8[:, 0].astype(np.uint32) << 16) | (rgb8[:, 1].astype(np.uint32) << 8) | rgb8[:, 2]
    rgbf = packed.view(np.float32)
    head = (
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n"
        f"WIDTH {len(xyz)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(xyz)}\nDATA {mode}\n"
    )
    with open(path, "wb") as fh:
        fh.write(head.encode())
        if mode == "ascii":
            for p, c in zip(xyz, packed):
                fh.write(
                    " ".join(repr(float(v)) for v in (*p, np.uint32(c).view(np.float32))).encode() + b"\n"
                )
        elif mode == "binary":
            arr = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])
            arr["x"], arr["y"], arr["z"], arr["rgb"] = *xyz.T, rgbf
            fh.write(arr.tobytes())
        else:
            raw = b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in (*xyz.T, rgbf))
            comp = lzf_literals(raw)
            fh.write(struct.pack("<II", len(comp), len(raw)) + comp)
    return path


@pytest.fixture(scope="session")
def write_pcd() -> Callable[[Path, str, np.ndarray, np.ndarray], Path]:
    """`write_pcd(path, mode, xyz, rgb8)`: a PCD file, mode ascii | binary | binary_compressed."""
    return _write_pcd


# ----------------------------------------------------------------------------- aligned data
def _modelnet_split(shared_data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(shared_data / "modelnet40" / f"modelnet40_pcd1024_{split}.npz") as z:
        return z["points"], z["labels"]


def build_openshape_layout(
    root: Path, shared_data: Path, per_class: int = 2, dim: int = 1280, classes: int = 40, seed: int = 0
) -> Path:
    """An OpenShape-layout folder made from real ModelNet40 clouds (y-up, like the release).

    Per shape: xyz, rgb, 12 view features + a thumbnail, names, BLIP/MSFT captions, retrieval texts,
    each with features of the release's shapes ({'original', 'prompt_avg'} dicts, `dim`-d). Features
    are a per-class direction plus noise, and meta_data/modelnet40/cat_name_pt_feat.npy holds the
    class directions, so zero-shot through the class-name file has real signal to learn.
    Also: meta_data/split/train.json, a GPT-filter json, and the ModelNet40 test set as
    meta_data/modelnet40/test_pc.npy + test_split.json.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)

    def feat(label: int, noise: float = 0.6) -> np.ndarray:
        v = centers[label] + noise * rng.normal(size=dim).astype(np.float32) / np.sqrt(dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    pts, labels = _modelnet_split(shared_data, "train")
    names = (shared_data / "labels" / "modelnet40_shape_names.txt").read_text().split()
    items, flags = [], {}
    (root / "objaverse").mkdir(parents=True, exist_ok=True)
    (root / "shapenet").mkdir(parents=True, exist_ok=True)
    for c in range(classes):
        for k, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            uid = f"{names[c]}_{i:05d}"
            src = "Objaverse" if k % 2 == 0 else "ShapeNet"
            d = {
                "xyz": pts[i][:, [0, 2, 1]].copy(),  # the release stores y-up
                "rgb": np.full((len(pts[i]), 3), 102.0, np.float32),
                "image_feat": np.stack([feat(c) for _ in range(12)]),
                "text": [f"a {names[c]}", f"{names[c]} model"],
                "text_feat": [{"original": feat(c, 0.3), "prompt_avg": feat(c, 0.2)} for _ in range(2)],
                "blip_caption": f"a 3d rendering of a {names[c]}",
                "blip_caption_feat": {"original": feat(c), "prompt_avg": feat(c)},
                "msft_caption": f"a {names[c]} on a white background",
                "msft_caption_feat": {"original": feat(c), "prompt_avg": feat(c)},
                "retrieval_text": [f"photo of a {names[c]}"],
                "retrieval_text_feat": [{"original": feat(c)}],
            }
            if src == "Objaverse":
                d["thumbnail_feat"] = feat(c)
            folder = "objaverse" if src == "Objaverse" else "shapenet"
            np.save(root / folder / f"{uid}.npy", np.array(d, dtype=object), allow_pickle=True)
            items.append({"data_path": f"/mnt/data/{folder}/{uid}.npy", "id": uid, "dataset": src})
            flags[uid] = {"flag": "N" if i % 3 == 0 else "Y"}
    split = root / "meta_data" / "split"
    split.mkdir(parents=True, exist_ok=True)
    (split / "train.json").write_text(json.dumps(items))
    (root / "meta_data" / "gpt4_filtering.json").write_text(json.dumps(flags))
    mn = root / "meta_data" / "modelnet40"
    mn.mkdir(parents=True, exist_ok=True)
    tp, tl = _modelnet_split(shared_data, "test")
    keep = np.concatenate([np.flatnonzero(tl == c)[:3] for c in range(40)])
    grey = np.full((1024, 3), 102.0, np.float32)
    pcs = np.array([{"xyz": tp[i][:, [0, 2, 1]].copy(), "rgb": grey} for i in keep])
    np.save(mn / "test_pc.npy", pcs, allow_pickle=True)
    (mn / "test_split.json").write_text(json.dumps([{"category": names[tl[i]]} for i in keep]))
    np.save(mn / "cat_name_pt_feat.npy", centers)
    return root


def build_captions_folder(root: Path, shared_data: Path, per_class: int = 2, classes: int = 10) -> Path:
    """A user's folder: real ModelNet40 train clouds as .npy / .ply files plus captions.csv."""
    pts, labels = _modelnet_split(shared_data, "train")
    names = (shared_data / "labels" / "modelnet40_shape_names.txt").read_text().split()
    root.mkdir(parents=True, exist_ok=True)
    rows = ["file,caption"]
    for c in range(classes):
        for k, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            rel = f"{names[c]}/{i}.npy"
            (root / names[c]).mkdir(exist_ok=True)
            np.save(root / rel, pts[i] * 3.0 + 1.0)  # user units: not centred, not unit-sized
            rows.append(f'{rel},"a 3D model of a {names[c].replace("_", " ")}"')
            if k == 0:
                rows.append(f"{rel},the {names[c].replace('_', ' ')} seen from the side")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def openshape_root(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return build_openshape_layout(tmp_path_factory.mktemp("openshape"), shared_data)


@pytest.fixture(scope="session")
def captions_root(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return build_captions_folder(tmp_path_factory.mktemp("captions"), shared_data)


# ----------------------------------------------------------------------------- CLIP
def _tiny_tokenizer_files(d):
    chars = list("abcdefghijklmnopqrstuvwxyz.")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return vocab


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised Hugging Face CLIP saved locally (the CLIP teachers' test double)."""
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tinyclip")
    vocab = _tiny_tokenizer_files(d)
    tok = transformers.CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    tok.save_pretrained(str(d))
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    transformers.CLIPModel(cfg).eval().save_pretrained(str(d))
    return d


@pytest.fixture()
def spp(shared_data: Path) -> Path:
    """The real ShapeNetPart samples (with the official split lists)."""
    root = shared_data / "shapenetpart_samples"
    if not root.is_dir():
        pytest.skip("ShapeNetPart samples not in the shared data")
    return root


@pytest.fixture()
def kitti_root(tmp_path: Path, shared_data: Path) -> Path:
    """The three real KITTI frames in the object layout, with ImageSets train (3) / val (2 frames)."""
    import shutil

    src = shared_data / "kitti_samples" / "training"
    if not src.is_dir():
        pytest.skip("KITTI samples not in the shared data")
    root = tmp_path / "kitti"
    shutil.copytree(src, root / "training")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("000000\n000001\n000002\n")
    (root / "ImageSets" / "val.txt").write_text("000000\n000002\n")
    return root
