"""The one Registry class: registration, helpful errors, and plugins through entry points."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from svl.registry import PluginWarning, Registry


def test_register_get_create_and_names() -> None:
    reg: Registry = Registry("widget")

    @reg.register()
    def small(size: int = 1) -> dict:
        return {"size": size}

    reg.register("big", lambda: {"size": 9})
    assert reg.names() == ["big", "small"] and reg.names("s*") == ["small"]
    assert "small" in reg and len(reg) == 2 and list(reg) == ["big", "small"]
    assert reg.create("small", size=3) == {"size": 3}
    assert reg.get("big")() == {"size": 9}


def test_unknown_names_list_what_is_registered_and_suggest() -> None:
    reg: Registry = Registry("widget", hint="see widgets()")
    reg.register("e3dsnn_t", object())
    reg.register("e3dsnn_s", object())
    with pytest.raises(
        ValueError,
        match=r"unknown widget 'e3dsnn_x'; did you mean .*registered: e3dsnn_s, e3dsnn_t \(see widgets\(\)\)",
    ):
        reg.get("e3dsnn_x")


def test_a_second_entry_under_one_name_is_refused() -> None:
    reg: Registry = Registry("widget")
    reg.register("a", 1)
    reg.register("a", 1)  # the same object again is fine (module reloads)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)
    reg.register("a", 2, override=True)
    assert reg.get("a") == 2


def _install_plugin(tmp_path: Path, group: str, lines: str, module: str) -> None:
    """A real installed distribution (dist-info with entry_points.txt) on sys.path."""
    (tmp_path / "svl_test_plugin.py").write_text(textwrap.dedent(module))
    info = tmp_path / "svl_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: svl-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")


def test_entry_point_plugins_register_without_editing_svl(tmp_path: Path, monkeypatch) -> None:
    _install_plugin(
        tmp_path,
        "svl.test_widgets",
        "tiny = svl_test_plugin:build_tiny\nbroken = svl_test_plugin:missing",
        """
        def build_tiny():
            return "tiny widget"
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("widget", group="svl.test_widgets")
    with pytest.warns(PluginWarning, match="broken"):
        assert reg.create("tiny") == "tiny widget"
    assert reg.names() == ["tiny"]
    sys.modules.pop("svl_test_plugin", None)


def test_model_registry_takes_plugins_from_the_svl_models_group(tmp_path: Path, monkeypatch) -> None:
    from svl.models import MODELS, create_model

    _install_plugin(
        tmp_path,
        "svl.models",
        "plugin_pointnet = svl_test_plugin:build",
        """
        from svl.models import create_model

        def build(**kw):
            return create_model("spike_pointnet", **kw)
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(MODELS, "_plugins_loaded", False)
    try:
        m = create_model("plugin_pointnet", out_dim=7)
        assert m.out_dim == 7
    finally:
        MODELS.unregister("plugin_pointnet")
        sys.modules.pop("svl_test_plugin", None)


def test_build_takes_a_name_or_a_spec_dict() -> None:
    """One `{"name": ..., **kw}` parser for every registry (transforms and image transforms use it)."""
    reg: Registry = Registry("widget")

    @reg.register("box")
    def box(size: int = 1, colour: str = "red") -> dict:
        return {"size": size, "colour": colour}

    assert reg.build("box") == {"size": 1, "colour": "red"}
    spec = {"name": "box", "size": 3}
    assert reg.build(spec, colour="blue") == {"size": 3, "colour": "blue"}
    assert reg.build(spec, size=9) == {"size": 3, "colour": "red"}  # the spec wins over defaults
    assert spec == {"name": "box", "size": 3}  # the spec is not consumed
    with pytest.raises(ValueError, match=r"unknown widget 'bx'; did you mean 'box'\?.*registered: box"):
        reg.build({"name": "bx"})
    with pytest.raises(ValueError, match=r"widget spec needs a 'name' key, got \{'size': 3\}"):
        reg.build({"size": 3})
    with pytest.raises(ValueError, match=r"widget spec must be a name or a dict with 'name', got 3"):
        reg.build(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"widget 'box': bad arguments \{'sise': 3\}"):
        reg.build({"name": "box", "sise": 3})


def test_entries_carry_declared_or_default_metadata() -> None:
    """What an entry declares at registration is read back; undeclared entries get `default_meta` once."""
    seen = []

    def describe(obj) -> dict:
        seen.append(obj)
        return {"doc": obj.__doc__}

    reg: Registry = Registry("widget", default_meta=describe)

    def fast():
        """quick"""

    def slow():
        """careful"""

    reg.register("fast", fast, meta={"speed": 9})
    reg.register("slow", slow)
    assert dict(reg.meta("fast")) == {"speed": 9} and dict(reg.meta("slow")) == {"doc": "careful"}
    assert seen == [slow]  # computed at registration, for the undeclared entry only
    reg.meta("slow")
    assert seen == [slow]
    with pytest.raises(TypeError):
        reg.meta("fast")["speed"] = 1  # type: ignore[index]  (read-only)
    with pytest.raises(ValueError, match=r"unknown widget 'fats'; did you mean 'fast'"):
        reg.meta("fats")
    reg.unregister("fast")
    assert "fast" not in reg
    plain: Registry = Registry("plain")
    plain.register("x", 1)
    assert dict(plain.meta("x")) == {}


def test_an_undeclared_dataset_plugin_takes_what_its_signature_says(tmp_path: Path, monkeypatch) -> None:
    """A dataset registered through the entry point, declaring nothing, keeps working as before."""
    import numpy as np

    from svl.data import DATASETS, build_dataset, dataset_takes

    _install_plugin(
        tmp_path,
        "svl.datasets",
        "plugin_cubes = svl_test_plugin:build",
        """
        import numpy as np
        from svl.data import PointDataset

        class Cubes(PointDataset):
            def __init__(self, split, transforms, seed, num_points):
                super().__init__(split, ["cube"], transforms, seed)
                self.num_points = num_points

            def __len__(self):
                return 2

            def _load(self, i):
                return {"xyz": np.full((self.num_points, 3), float(i), np.float32), "label": 0}

        def build(split, root, transforms, seed, num_points=100):
            return Cubes(split, transforms, seed, num_points)
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(DATASETS, "_plugins_loaded", False)
    try:
        assert dataset_takes("plugin_cubes", "num_points") and not dataset_takes("plugin_cubes", "encoding")
        ds = build_dataset("plugin_cubes", "test", num_points=7)  # handed to the dataset, no fps added
        assert ds.num_points == 7 and len(ds.transforms.transforms) == 0
        assert np.array_equal(ds[1]["xyz"], np.ones((7, 3), np.float32))
    finally:
        DATASETS.unregister("plugin_cubes")
        sys.modules.pop("svl_test_plugin", None)
