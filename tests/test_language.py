"""The language bridge (issue 29): point tokens against a dense reference, answer-only labels, batched
generation equal to one-by-one, LoRA against merged dense weights, checkpoints that hold only what was
tuned, any local Hugging Face causal LM, both stages and `svl caption` / `svl chat` through the CLI,
and one `svl: error:` line for each bad input."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from svl.models import create_model  # noqa: E402
from svl.models.language import (  # noqa: E402
    IGNORE_INDEX,
    POINT_MARKER,
    PointLanguageModel,
    batch_points,
    build_small_lm,
    grid_tokens,
    load_bridge,
    load_lm,
    render_text,
)

TINY = {"stem_channels": 4, "channels": [4, 8, 8, 16], "depth": 1}
TEXTS = [
    "USER: What is this object? ASSISTANT: This is an airplane.",
    "USER: Describe this shape. ASSISTANT: A chair: a seat with a back and four legs.",
    "USER: Is this a lamp? ASSISTANT: No.",
] * 20


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    return build_small_lm(tmp_path_factory.mktemp("lm") / "small", TEXTS, vocab_size=300, hidden=32, layers=1)


@pytest.fixture(scope="module")
def clouds(shared_data: Path) -> np.ndarray:
    return np.load(shared_data / "modelnet40" / "modelnet40_pcd1024_test.npz")["points"][:4]


def _encoder(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    enc = create_model("e3dsnn_t", out_dim=16, **TINY)
    enc.model_name, enc.model_cfg = "e3dsnn_t", {"out_dim": 16, **TINY}
    return enc


def _bridge(lm_dir: Path, tune: str = "frozen", seed: int = 0) -> PointLanguageModel:
    lm, tok = load_lm(lm_dir)
    torch.manual_seed(seed)
    for p in lm.parameters():  # a random LM with varied outputs (the default init answers one token)
        p.data.normal_(0, 0.5)
    return PointLanguageModel(_encoder(seed), lm, tok, grid=2, hidden=16, lm_tune=tune)


def test_grid_tokens_equal_a_dense_per_cell_mean(clouds) -> None:
    enc = _encoder().eval()
    with torch.no_grad():
        st = enc.forward_features(batch_points([{"xyz": x} for x in clouds]))
    got = grid_tokens(st, 2)
    vals = st.features.bits.sum(0) if hasattr(st.features, "bits") else st.features
    for b in range(len(clouds)):
        rows = st.coords[:, 0] == b
        xyz, f = st.coords[rows, 1:].double(), vals[rows].double()
        lo, span = xyz.min(0).values, (xyz.max(0).values - xyz.min(0).values).clamp_min(1)
        for cell in range(8):
            ijk = torch.tensor([cell // 4, (cell // 2) % 2, cell % 2])
            inside = (((xyz - lo) / span * 2).floor().clamp(0, 1) == ijk).all(1)
            want = f[inside].mean(0) if inside.any() else torch.zeros(f.shape[1], dtype=torch.float64)
            torch.testing.assert_close(got[b, cell].double(), want, rtol=1e-5, atol=1e-6)


def test_only_answer_tokens_are_labelled_and_the_points_go_where_the_marker_is(lm_dir) -> None:
    m = _bridge(lm_dir)
    pts = torch.zeros(11, m.projector.lm_dim)
    turns = [("human", f"Look: {POINT_MARKER}\nWhat is this?"), ("gpt", "This is an airplane.")]
    x, labels = m.sequence(turns, pts, generate=False)
    answer = m._ids(" This is an airplane.") + [m.tokenizer.eos_token_id]
    assert labels[-len(answer) :] == answer and set(labels[: -len(answer)]) == {IGNORE_INDEX}
    head = 1 + len(m._ids("USER: Look:"))  # <s> and the text before the marker
    assert torch.equal(x[head : head + 11], pts)
    x2, labels2 = m.sequence(turns, pts, generate=True)  # ends at "ASSISTANT:", nothing labelled
    assert set(labels2) == {IGNORE_INDEX} and len(x2) == len(x) - len(answer)
    assert render_text(turns) == "USER: Look: What is this? ASSISTANT: This is an airplane."
    with pytest.raises(ValueError, match=r"prompt of \d+ tokens .* longer than the language model's context"):
        m.sequence([("human", "word " * 400)], pts, generate=True)


def test_batched_generation_equals_one_by_one(lm_dir, clouds) -> None:
    m = _bridge(lm_dir).eval()
    turns = [
        [("human", f"{POINT_MARKER} What is this?")],
        [("human", f"{POINT_MARKER} Is this a lamp or a chair?")],
        [("human", "Describe this shape.")],
    ]
    pts = batch_points([{"xyz": x} for x in clouds[:3]])
    both = m.generate({"points": pts, "turns": turns}, max_new_tokens=6)
    one = [
        m.generate({"points": batch_points([{"xyz": clouds[i]}]), "turns": [turns[i]]}, max_new_tokens=6)[0]
        for i in range(3)
    ]
    assert both == one and len(set(both)) > 1
    torch.manual_seed(3)
    a = m.generate({"points": pts, "turns": turns}, max_new_tokens=6, temperature=1.0, top_p=0.9)
    torch.manual_seed(3)
    assert a == m.generate({"points": pts, "turns": turns}, max_new_tokens=6, temperature=1.0, top_p=0.9)
    calls = []
    m.generate(
        {"points": pts, "turns": turns}, max_new_tokens=6, stop=lambda: len(calls) >= 2, on_token=calls.append
    )
    assert calls == [1, 2]  # stopped after the second token (Ctrl-C in `svl chat`)


def test_lora_matches_the_dense_merged_model_and_checkpoints_hold_only_what_is_tuned(
    lm_dir, clouds, tmp_path
) -> None:
    pytest.importorskip("peft")
    from svl.checkpoint import save_checkpoint
    from svl.models.language import bridge_meta

    m = _bridge(lm_dir, tune="lora")
    for n, p in m.lm.named_parameters():  # LoRA B starts at zero: give it weights so it changes the LM
        if "lora_B" in n:
            p.data.normal_(0, 0.3)
    batch = {
        "points": batch_points([{"xyz": x} for x in clouds[:2]]),
        "turns": [[("human", f"{POINT_MARKER} What is this?"), ("gpt", "This is an airplane.")]] * 2,
    }
    m.eval()
    loss = m(batch)["loss"]
    dense = _bridge(lm_dir)  # the same LM with W + B A * alpha / r written into its weights
    dense.load_state_dict({**m.state_dict()}, strict=False)
    merged = m.lm.merge_and_unload()
    dense.lm.load_state_dict(merged.state_dict())
    dense.eval()
    torch.testing.assert_close(dense(batch)["loss"], loss, rtol=1e-5, atol=1e-6)
    keys = list(_bridge(lm_dir, tune="lora").state_dict())
    assert all(k.startswith(("encoder.", "projector.")) or "lora_" in k for k in keys)
    assert any("lora_" in k for k in keys) and not any(
        k.startswith("lm.") for k in _bridge(lm_dir).state_dict()
    )
    # a checkpoint round trip through load_bridge gives the same answers
    m2 = _bridge(lm_dir, tune="lora", seed=1)
    meta = bridge_meta(m2, lm_dir) | {"data": {"num_points": 1024}}
    ckpt = save_checkpoint(tmp_path / "bridge.safetensors", m2.state_dict(), meta)
    back = load_bridge(ckpt)
    q = {"points": batch["points"], "turns": [[("human", f"{POINT_MARKER} What is this?")]] * 2}
    # the checkpoint names the LM folder, which holds the LM before `_bridge` randomised it
    assert back.lm_tune == "lora" and len(back.state_dict()) == len(m2.state_dict())
    assert isinstance(back.generate(q, max_new_tokens=3)[0], str)


def test_any_local_hugging_face_causal_lm_loads(tmp_path, clouds) -> None:
    """A GPT-2 layout (not the builtin Llama one), random and tiny, saved to a folder: the user's path."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_lm(build_small_lm(tmp_path / "seed_lm", TEXTS, vocab_size=300, hidden=32, layers=1))[1]
    gpt = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_embd=32,
            n_layer=1,
            n_head=2,
            n_positions=128,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )
    gpt.save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    lm, tok2 = load_lm(tmp_path / "gpt2")
    assert type(lm).__name__ == "GPT2LMHeadModel"
    m = PointLanguageModel(_encoder(), lm, tok2, grid=1, hidden=8)
    batch = {
        "points": batch_points([{"xyz": clouds[0]}]),
        "turns": [[("human", "What is this?"), ("gpt", "No.")]],
    }
    assert torch.isfinite(m(batch)["loss"])
    assert len(m.generate(batch, max_new_tokens=2)) == 1


def test_a_folder_that_is_not_a_language_model_is_one_error(tmp_path, lm_dir) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: not a Hugging Face model directory \(no config.json\)"):
        load_lm(tmp_path / "empty")
    notok = tmp_path / "notok"
    notok.mkdir()
    (notok / "config.json").write_text((lm_dir / "config.json").read_text())
    with pytest.raises(ValueError, match=r"notok: no tokenizer files"):
        load_lm(notok)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_lm(tmp_path / "missing")


# ----------------------------------------------------------------------------- through the CLI
SMALL = [
    "data.train_per_class=3",
    "data.test_per_class=1",
    "data.val_fraction=0.2",
    "train.epochs=1",
    "train.batch_size=8",
    "lm.hidden=32",
    "lm.layers=1",
    "lm.vocab_size=400",
    "lm.pretrain_epochs=1",
    "model.out_dim=16",
    "model.options.stem_channels=4",
    "model.options.channels=[4,8,8,16]",
    "eval.max_new_tokens=4",
    "eval.energy=false",
]


@pytest.fixture(scope="module")
def stages(tmp_path_factory, shared_data) -> dict[str, Path]:
    """Stage 1 then stage 2 on the generated ModelNet40 corpus (a pipeline check, not a result)."""
    from svl.cli import main

    d = tmp_path_factory.mktemp("lang")
    env = os.environ.get("SVL_CACHE")
    os.environ["SVL_CACHE"] = str(d / "cache")
    root = f"data.root={shared_data / 'modelnet40'}"
    try:
        assert main(["finetune", "task=language", f"out_dir={d / 's1'}", root, *SMALL]) == 0
        s1 = d / "s1" / "final.safetensors"
        assert (
            main(["finetune", "task=language", "stage=2", f"init={s1}", f"out_dir={d / 's2'}", root, *SMALL])
            == 0
        )
    finally:
        if env is None:
            os.environ.pop("SVL_CACHE", None)
        else:
            os.environ["SVL_CACHE"] = env
    return {"s1": s1, "s2": d / "s2" / "final.safetensors", "dir": d}


def test_two_stages_write_results_and_checkpoints(stages) -> None:
    from svl.checkpoint import read_checkpoint_meta

    r1 = json.loads((stages["dir"] / "s1" / "results.json").read_text())
    r2 = json.loads((stages["dir"] / "s2" / "results.json").read_text())
    assert r1["stage"] == 1 and r1["lm_tune"] == "frozen" and r2["stage"] == 2 and r2["lm_tune"] == "full"
    for key in ("gen_cls_acc", "yesno_em", "choice_em", "caption_similarity", "answer_words", "probe_acc"):
        assert key in r2 and r2[key] is not None
    assert r2["n_test_conversations"] == 4 * 40  # one shape per class, four kinds, held-out phrasings
    assert (
        0 < r2["lm_flops_per_token"]
        and "generative classification" in (stages["dir"] / "s2" / "results.txt").read_text()
    )
    m1, m2 = read_checkpoint_meta(stages["s1"]), read_checkpoint_meta(stages["s2"])
    assert m1["kind"] == m2["kind"] == "svl-language" and m1["lm"]["path"] == m2["lm"]["path"]
    assert m2["stage"] == 2 and m2["init"] == str(stages["s1"])


def test_caption_prints_one_line_per_file_and_goes_on_past_a_bad_one(
    stages, clouds, tmp_path, run_cli
) -> None:
    good = [tmp_path / "a.npy", tmp_path / "b.npy"]
    for f, x in zip(good, clouds):
        np.save(f, x)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros(5, np.float32))
    code, out, err = run_cli("caption", "--checkpoint", stages["s2"], good[0], bad, good[1])
    assert code == 2, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{good[0]}: ") and lines[1].startswith(f"{good[1]}: ")
    assert f"svl: error: {bad}" in err and err.splitlines()[-1] == "svl: 1 of 3 files failed"
    code, out, err = run_cli(
        "caption", "--checkpoint", stages["s2"], good[0], "--json", "--temperature", "0.8"
    )
    assert code == 0 and isinstance(json.loads(out)[0]["caption"], str)


def test_bad_inputs_are_one_error_line(stages, tmp_path, run_cli, model_checkpoint, shared_data) -> None:
    # a checkpoint of another kind
    _, seg = model_checkpoint(tmp_path / "seg.safetensors", "e3dsnn_t", meta={"kind": "svl-pretrain"})
    f = tmp_path / "a.npy"
    np.save(f, np.random.default_rng(0).random((100, 3)).astype(np.float32))
    code, out, err = run_cli("caption", "--checkpoint", seg, f)
    assert code == 2 and out == "" and err.count("\n") == 1 and "svl finetune task=language" in err
    # the LM folder moved: named, with the fix
    code, _, err = run_cli("caption", "--checkpoint", stages["s2"], f, "--lm", tmp_path / "nowhere")
    assert code == 2 and err.count("\n") == 1 and "nowhere" in err
    # a conversation file naming a missing point file
    conv = tmp_path / "conv.json"
    conv.write_text(
        json.dumps(
            [
                {
                    "object_id": "obj1",
                    "conversations": [
                        {"from": "human", "value": "<point>\nWhat is this?"},
                        {"from": "gpt", "value": "A chair."},
                    ],
                }
            ]
        )
    )
    code, _, err = run_cli(
        "finetune", "task=language", f"out_dir={tmp_path / 'r'}", f"data.dataset={conv}", *SMALL
    )
    assert code == 2 and err.startswith("svl: error: ") and "obj1" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    # a checkpoint that is not a 3D point encoder (a Spikformer image student)
    _, img = model_checkpoint(tmp_path / "img.safetensors", "spikformer_t", meta={"kind": "svl-classifier"})
    code, _, err = run_cli(
        "finetune",
        "task=language",
        f"out_dir={tmp_path / 'r2'}",
        f"init={img}",
        f"data.root={shared_data / 'modelnet40'}",
        *SMALL,
    )
    assert code == 2 and err.count("svl: error:") == 1 and "Traceback" not in err
    # a language-model folder without a config
    (tmp_path / "not_an_lm").mkdir()
    code, _, err = run_cli(
        "finetune",
        "task=language",
        f"out_dir={tmp_path / 'r4'}",
        f"lm.path={tmp_path / 'not_an_lm'}",
        f"data.root={shared_data / 'modelnet40'}",
        *SMALL,
    )
    assert (
        code == 2 and err.count("svl: error:") == 1 and "not_an_lm: not a Hugging Face model directory" in err
    )
    # stage 2 from something that is not a stage-1 checkpoint
    code, _, err = run_cli(
        "finetune", "task=language", "stage=2", f"init={seg}", f"out_dir={tmp_path / 'r3'}"
    )
    assert code == 2 and "stage-1 checkpoint" in err


def test_chat_answers_through_a_terminal_and_exit_leaves(stages, clouds, tmp_path) -> None:
    import pty
    import select
    import signal
    import subprocess
    import time

    f = tmp_path / "a.npy"
    np.save(f, clouds[0])
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "svl",
            "chat",
            "--checkpoint",
            str(stages["s2"]),
            str(f),
            "--max-new-tokens",
            "4",
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "SVL_PROGRESS": "0"},
    )
    os.close(follower)

    def read_until(marker: bytes, timeout: float = 120) -> bytes:
        buf = b""
        end = time.time() + timeout
        while marker not in buf and time.time() < end:
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                try:
                    buf += os.read(leader, 4096)
                except OSError:
                    break
        return buf

    try:
        assert b"you> " in read_until(b"you> ")
        os.write(leader, b"What is this object?\n")
        answer = read_until(b"you> ")
        assert b"svl> " in answer
        os.write(leader, b"why " * 300 + b"\n")  # longer than the LM's context: one error, a new prompt
        said = read_until(b"you> ")
        assert b"svl: error: prompt of" in said and b"context" in said and proc.poll() is None
        proc.send_signal(signal.SIGINT)  # Ctrl-C at the prompt: the line is dropped, the program stays
        # (a signal landing between the prompt and the read is handled when the read returns)
        time.sleep(0.5)
        os.write(leader, b"\n")
        again = read_until(b"you> ")
        assert b"you> " in again and proc.poll() is None, (again, proc.poll())
        os.write(leader, b"exit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


def test_a_pointllm_conversation_file_trains_unchanged(tmp_path, clouds, run_cli, svl_cache) -> None:
    pts = tmp_path / "points"
    pts.mkdir()
    entries = []
    for i, x in enumerate(clouds):
        np.save(pts / f"obj{i}_8192.npy", np.concatenate([x, np.full_like(x, 0.5)], 1))  # xyz + rgb
        entries.append(
            {
                "object_id": f"obj{i}",
                "conversation_type": "simple_description",
                "conversations": [
                    {"from": "human", "value": "<point>\nWhat is this?"},
                    {"from": "gpt", "value": f"Object {i}."},
                    {"from": "human", "value": "And its colour?"},
                    {"from": "gpt", "value": "Grey."},
                ],
            }
        )
    conv = tmp_path / "brief.json"
    conv.write_text(json.dumps(entries))
    code, _, err = run_cli(
        "finetune",
        "task=language",
        f"out_dir={tmp_path / 'run'}",
        f"data.dataset={conv}",
        f"data.points_dir={pts}",
        "data.val_fraction=0.25",
        *SMALL[3:],
        "train.batch_size=2",
    )
    assert code == 0, err
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["stage"] == 1 and (tmp_path / "run" / "final.safetensors").exists()


def test_a_tuned_encoder_gets_gradients_and_a_frozen_one_none(lm_dir, clouds) -> None:
    lm, tok = load_lm(lm_dir)
    batch = {
        "points": batch_points([{"xyz": x} for x in clouds[:2]]),
        "turns": [[("human", "<point> What is this?"), ("gpt", "A chair.")]] * 2,
    }
    for tune in (True, False):
        m = PointLanguageModel(_encoder(), lm, tok, grid=2, hidden=16, tune_encoder=tune).train()
        m(batch)["loss"].backward()
        grads = [p.grad for p in m.encoder.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == tune
        assert all(p.grad is not None for p in m.projector.parameters())
