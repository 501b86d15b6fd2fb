from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import svl
from svl import cli
from svl.cli import info as cli_info


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"svl {svl.__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "info" in capsys.readouterr().err


def test_unknown_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["no-such-command"])
    assert e.value.code == 2


def test_info_text(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy
    import torch

    data = tmp_path / "data"
    (data / "labels").mkdir(parents=True)
    monkeypatch.setenv("SVL_DATA", str(data))
    monkeypatch.setenv("SVL_CACHE", str(tmp_path / "cache"))
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"svl {svl.__version__}" in out
    assert f"torch {torch.__version__}" in out and f"numpy {numpy.__version__}" in out
    assert f"threads {torch.get_num_threads()}" in out
    for name, _ in cli_info.OPTIONAL_BACKENDS:
        assert name in out
    assert f"data root: {data.resolve()} (modelnet40/ missing, labels/ found)" in out
    assert f"cache dir: {tmp_path / 'cache'}" in out


def test_info_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    monkeypatch.setenv("SVL_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("SVL_CACHE", str(tmp_path / "cache"))
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["svl"] == svl.__version__
    assert info["data_root"] is None and info["data"] == {"modelnet40": False, "labels": False}
    assert info["backends"]["h5py"] == (importlib.util.find_spec("h5py") is not None)
    assert info["backends"]["spikingjelly"] == (importlib.util.find_spec("spikingjelly") is not None)
    assert isinstance(info["cuda"], bool) and isinstance(info["torch_threads"], int)


def test_info_does_not_import_heavy_backends() -> None:
    code = (
        "import sys; from svl.cli import info; info.collect_info(); "
        "heavy = [m for m in ('transformers', 'sentence_transformers', 'open_clip', 'h5py', 'trimesh') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_info_with_real_shared_data(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    if os.environ.get("SVL_DATA") is None:
        assert Path(info["data_root"]) == shared_data
    assert info["data"]["modelnet40"] == (Path(info["data_root"]) / "modelnet40").is_dir()


@pytest.mark.parametrize("args", [["-m", "svl", "--version"], ["-m", "svl.cli", "--version"]])
def test_module_entry_points(args: list[str]) -> None:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"svl {svl.__version__}"


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


def _run_demo(monkeypatch: pytest.MonkeyPatch, argv: list[str], seen: list) -> int:
    def handler(args: argparse.Namespace) -> None:
        seen.append(cli.parse_overrides(_DemoCfg, args))

    monkeypatch.setattr(cli, "build_parser", lambda: _demo_parser(handler))
    return cli.main(argv)


def test_config_subcommand_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_file = tmp_path / "demo.yaml"
    cfg_file.write_text("epochs: 4\ninner:\n  lr: 0.5\n")
    seen: list = []
    assert _run_demo(monkeypatch, ["demo", "--config", str(cfg_file), "inner.lr=0.25"], seen) == 0
    assert seen == [_DemoCfg(epochs=4, inner=_Inner(lr=0.25))]


def test_config_errors_become_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SVL_DEBUG", raising=False)
    seen: list = []
    assert _run_demo(monkeypatch, ["demo", "inner.lrr=3"], seen) == 2
    err = capsys.readouterr().err
    assert err.startswith("svl: error: override 'inner.lrr=3': unknown config key 'inner.lrr'")
    assert "Traceback" not in err
    assert _run_demo(monkeypatch, ["demo", "-c", str(tmp_path / "missing.yaml")], seen) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
    assert seen == []


def test_debug_env_reraises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVL_DEBUG", "1")
    with pytest.raises(ValueError, match="epochs"):
        _run_demo(monkeypatch, ["demo", "epochs=x"], [])


def test_print_config(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _run_demo(monkeypatch, ["demo", "--print-config", "epochs=7"], [])
    assert e.value.code == 0
    assert capsys.readouterr().out == "epochs: 7\ninner:\n  lr: 0.1\n"


def test_info_subprocess_without_data(tmp_path: Path) -> None:
    env = {**os.environ, "SVL_DATA": str(tmp_path / "nowhere")}
    env.pop("SVL_DEBUG", None)
    r = subprocess.run(
        [sys.executable, "-m", "svl", "info"], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0 and "data root: not found" in r.stdout
