from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import svl
from svl import cli
from svl.cli import info as cli_info

RunCli = Callable[..., tuple[int, str, str]]


def test_version(run_cli: RunCli) -> None:
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"svl {svl.__version__}"


def test_no_command_prints_help(run_cli: RunCli) -> None:
    code, _, err = run_cli()
    assert code == 2 and "info" in err


def test_unknown_command_is_usage_error(run_cli: RunCli) -> None:
    code, _, err = run_cli("no-such-command")
    assert code == 2 and "no-such-command" in err


def test_info_text(run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy
    import torch

    data = tmp_path / "data"
    (data / "labels").mkdir(parents=True)
    monkeypatch.setenv("SVL_DATA", str(data))
    monkeypatch.setenv("SVL_CACHE", str(tmp_path / "cache"))
    code, out, _ = run_cli("info")
    assert code == 0
    assert f"svl {svl.__version__}" in out
    assert f"torch {torch.__version__}" in out and f"numpy {numpy.__version__}" in out
    assert f"threads {torch.get_num_threads()}" in out
    assert cli_info.OPTIONAL_BACKENDS
    for name, _ in cli_info.OPTIONAL_BACKENDS:
        assert name in out
    assert f"data root: {data.resolve()} (modelnet40/ missing, labels/ found)" in out
    assert f"cache dir: {tmp_path / 'cache'}" in out


def test_info_json(run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    monkeypatch.setenv("SVL_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("SVL_CACHE", str(tmp_path / "cache"))
    code, out, _ = run_cli("info", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["svl"] == svl.__version__
    assert info["data_root"] is None and info["data"] == {"modelnet40": False, "labels": False}
    assert info["backends"]["h5py"] == (importlib.util.find_spec("h5py") is not None)
    assert info["backends"]["spikingjelly"] == (importlib.util.find_spec("spikingjelly") is not None)
    assert isinstance(info["cuda"], bool) and isinstance(info["torch_threads"], int)


def test_info_does_not_import_heavy_backends(run_python: RunCli) -> None:
    code, out, err = run_python(
        "-c",
        "import sys; from svl.cli import info; info.collect_info(); "
        "heavy = [m for m in ('transformers', 'sentence_transformers', 'open_clip', 'h5py', 'trimesh') "
        "if m in sys.modules]; print(heavy)",
    )
    assert code == 0, err
    assert out.strip() == "[]"


def test_info_with_real_shared_data(
    shared_data: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SVL_DATA", str(shared_data))
    code, out, _ = run_cli("info", "--json")
    assert code == 0
    info = json.loads(out)
    assert Path(info["data_root"]) == shared_data
    assert info["data"]["modelnet40"] == (shared_data / "modelnet40").is_dir()
    assert info["data"]["labels"] == (shared_data / "labels").is_dir()


@pytest.mark.parametrize("args", [["-m", "svl", "--version"], ["-m", "svl.cli", "--version"]])
def test_module_entry_points(args: list[str], run_python: RunCli) -> None:
    code, out, err = run_python(*args, timeout=60)
    assert code == 0, err
    assert out.strip() == f"svl {svl.__version__}"


# --- the extension pattern other subcommands follow -----------------------------------------
@dataclass
class _Inner:
    lr: float = 0.1


@dataclass
class _DemoCfg:
    epochs: int = 1
    inner: _Inner = field(default_factory=_Inner)


_real_build_parser = cli.build_parser


def _demo_parser(handler) -> argparse.ArgumentParser:
    parser = _real_build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.add_parser("demo")
    cli.add_config_args(p)
    p.set_defaults(func=handler)
    return parser


@pytest.fixture
def run_demo(run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> RunCli:
    """`run_demo(seen, *argv)`: `svl` with an extra `demo` subcommand whose handler appends its config."""

    def run(seen: list, *argv: str | Path) -> tuple[int, str, str]:
        def handler(args: argparse.Namespace) -> None:
            seen.append(cli.parse_overrides(_DemoCfg, args))

        monkeypatch.setattr(cli, "build_parser", lambda: _demo_parser(handler))
        return run_cli(*argv)

    return run


def test_config_subcommand_overrides(tmp_path: Path, run_demo: RunCli) -> None:
    cfg_file = tmp_path / "demo.yaml"
    cfg_file.write_text("epochs: 4\ninner:\n  lr: 0.5\n")
    seen: list = []
    assert run_demo(seen, "demo", "--config", cfg_file, "inner.lr=0.25")[0] == 0
    assert seen == [_DemoCfg(epochs=4, inner=_Inner(lr=0.25))]


def test_config_errors_become_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_demo: RunCli
) -> None:
    monkeypatch.delenv("SVL_DEBUG", raising=False)
    seen: list = []
    code, _, err = run_demo(seen, "demo", "inner.lrr=3")
    assert code == 2
    assert err.startswith("svl: error: override 'inner.lrr=3': unknown config key 'inner.lrr'")
    assert "Traceback" not in err
    code, _, err = run_demo(seen, "demo", "-c", tmp_path / "missing.yaml")
    assert code == 2 and "missing.yaml does not exist" in err
    assert seen == []


def test_debug_env_reraises(monkeypatch: pytest.MonkeyPatch, run_demo: RunCli) -> None:
    monkeypatch.setenv("SVL_DEBUG", "1")
    with pytest.raises(ValueError, match="epochs"):
        run_demo([], "demo", "epochs=x")


def test_print_config(run_demo: RunCli) -> None:
    code, out, _ = run_demo([], "demo", "--print-config", "epochs=7")
    assert code == 0
    assert out == "epochs: 7\ninner:\n  lr: 0.1\n"


def test_info_subprocess_without_data(tmp_path: Path, run_python: RunCli) -> None:
    code, out, err = run_python(
        "-m", "svl", "info", env={"SVL_DATA": str(tmp_path / "nowhere"), "SVL_DEBUG": None}, timeout=60
    )
    assert code == 0, err
    assert "data root: not found" in out
