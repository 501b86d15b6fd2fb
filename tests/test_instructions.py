"""Tests of svl.data.instructions: the conversation structure, the generated ModelNet40 corpus, the
PointLLM / ShapeLLM readers and the scoring rules.

Why these: the bridge is scored by class-name matching and exact match, so every ModelNet40 name
(the multi-word ones above all) must be found exactly once; held-out phrasings must never leak into
training; and a bad public file must fail with one line naming the file, never a KeyError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from svl.data.instructions import (
    PHRASINGS,
    POINT_MARKER,
    Conversation,
    class_mentioned,
    corpus_text,
    exact_match,
    generative_correct,
    modelnet40_conversations,
    normalise,
    read_conversations,
)

MULTI_WORD = ["flower_pot", "glass_box", "night_stand", "range_hood", "tv_stand"]


@pytest.fixture(scope="module")
def modelnet(shared_data: Path) -> tuple[np.ndarray, list[str]]:
    with np.load(shared_data / "modelnet40" / "modelnet40_pcd1024_test.npz") as z:
        return z["labels"].astype(np.int64), [str(c) for c in z["classes"]]


# ----------------------------------------------------------------------------- structure
def test_conversation_question_and_answer() -> None:
    conv = Conversation(
        "x",
        [
            ("human", f"{POINT_MARKER}\nWhat is this?"),
            ("gpt", "A chair."),
            ("human", "Sure?"),
            ("gpt", "Yes."),
        ],
        "instruction",
    )
    assert conv.question == "What is this?"
    assert conv.answer == "Yes."


@pytest.mark.parametrize(
    ("turns", "problem"),
    [
        ([], "no turns"),
        ([("human", f"{POINT_MARKER} hi")], "no gpt answer"),
        ([("gpt", "hi"), ("human", POINT_MARKER)], "alternate"),
        ([("human", "What is this?"), ("gpt", "A chair.")], "marker"),
    ],
)
def test_conversation_refuses_bad_turns(turns: list[tuple[str, str]], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Conversation("x", turns, "instruction")


# ----------------------------------------------------------------------------- generated corpus
def test_generated_corpus_from_real_labels(modelnet: tuple[np.ndarray, list[str]]) -> None:
    labels, classes = modelnet
    convs = modelnet40_conversations(labels[:200], classes, "train", per_shape=2, seed=3)
    assert len(convs) == 200 * 4 * 2
    for conv in convs:
        i = conv.index
        assert conv.object_id == f"modelnet40/train/{i:05d}"
        assert conv.label == labels[i]
        assert conv.turns[0][1].startswith(POINT_MARKER + "\n")
        assert "_" not in conv.question + conv.answer  # names shown with spaces
        name = classes[conv.label].replace("_", " ")
        if conv.kind == "what":
            assert conv.answer in (f"This is a {name}.", f"This is an {name}.", f"This is a set of {name}.")
            assert generative_correct(conv.answer, conv.label, classes)
        elif conv.kind == "caption":
            assert conv.answer.count(".") == 1 and conv.answer.endswith(".")
            assert generative_correct(conv.answer.split(":")[0], conv.label, classes)
        elif conv.kind == "yesno":
            assert conv.answer in ("Yes.", "No.")
            asked = class_mentioned(conv.question, classes)
            assert (asked == [conv.label]) == (conv.answer == "Yes.")
        else:
            assert conv.options is not None and len(set(conv.options)) == 4 and name in conv.options
            assert conv.answer == name[0].upper() + name[1:] + "."
            shown = sorted(classes.index(o.replace(" ", "_")) for o in conv.options)
            assert class_mentioned(conv.question, classes) == shown
    yes = sum(c.answer == "Yes." for c in convs if c.kind == "yesno")
    assert 0.4 < yes / 400 < 0.6
    # the two answers of a shape differ in phrasing
    assert convs[2].question != convs[3].question


def test_articles_and_descriptions(modelnet: tuple[np.ndarray, list[str]]) -> None:
    _, classes = modelnet
    labels = np.array([classes.index(c) for c in ("airplane", "xbox", "stairs", "night_stand", "bed")])
    what = {c.label: c.answer for c in modelnet40_conversations(labels, classes, "t", kinds=["what"])}
    assert [what[y] for y in labels.tolist()] == [
        "This is an airplane.",
        "This is an xbox.",
        "This is a set of stairs.",
        "This is a night stand.",
        "This is a bed.",
    ]
    cap = modelnet40_conversations(labels[:1], classes, "t", kinds=["caption"])[0]
    assert cap.answer == "An airplane: a long thin fuselage with two wide flat wings and a tail fin."


def test_generated_corpus_is_deterministic_and_heldout_disjoint(
    modelnet: tuple[np.ndarray, list[str]],
) -> None:
    labels, classes = modelnet
    a = modelnet40_conversations(labels[:100], classes, "train", per_shape=3, seed=1)
    b = modelnet40_conversations(labels[:100], classes, "train", per_shape=3, seed=1)
    c = modelnet40_conversations(labels[:100], classes, "train", per_shape=3, seed=2)
    assert a == b and a != c
    # a shape's conversations do not depend on which other kinds are asked
    only = modelnet40_conversations(labels[:100], classes, "train", per_shape=3, seed=1, kinds=["choice"])
    assert only == [x for x in a if x.kind == "choice"]

    held = modelnet40_conversations(labels[:100], classes, "test", phrasings="heldout", per_shape=3)
    for kind in PHRASINGS["train"]:
        tr, va, te = (set(PHRASINGS[s][kind]) for s in ("train", "val", "heldout"))
        assert len(tr) >= 5 and len(va) >= 3 and len(te) >= 3
        assert not tr & te and not tr & va and not va & te  # three disjoint sets of wordings
    five = modelnet40_conversations(labels[:100], classes, "train", per_shape=3, templates=5)
    assert {x.question for x in five if x.kind == "what"} <= set(PHRASINGS["train"]["what"][:5])
    train_q = {x.question for x in a}
    held_q = {x.question for x in held}
    assert not train_q & held_q
    # every held-out question comes from a held-out template, none from a train one
    stems = {t.split("{")[0] for kind in PHRASINGS["train"].values() for t in kind}
    assert not any(q.startswith(s) for q in held_q for s in stems if len(s) > 8)


def test_generated_corpus_refuses_bad_arguments(modelnet: tuple[np.ndarray, list[str]]) -> None:
    labels, classes = modelnet
    with pytest.raises(ValueError, match="phrasings"):
        modelnet40_conversations(labels[:2], classes, "t", phrasings="test")
    with pytest.raises(ValueError, match="kinds"):
        modelnet40_conversations(labels[:2], classes, "t", kinds=["story"])
    with pytest.raises(ValueError, match=r"\[0, 40\)"):
        modelnet40_conversations(np.array([40]), classes, "t")
    with pytest.raises(ValueError, match="4 classes"):
        modelnet40_conversations(np.array([0]), classes[:3], "t", kinds=["choice"])
    with pytest.raises(ValueError, match="description.*widget"):
        modelnet40_conversations(np.array([0]), ["widget", "gadget"], "t", kinds=["caption"])


def test_corpus_text() -> None:
    convs = [
        Conversation("a", [("human", f"{POINT_MARKER}\nWhat is this?"), ("gpt", "A chair.")], "what"),
        Conversation("b", [("human", f"{POINT_MARKER}\nWhat is this?"), ("gpt", "A bed.")], "what"),
    ]
    assert corpus_text(convs) == ["What is this?", "A chair.", "What is this?", "A bed."]
    assert corpus_text(convs, unique=True) == ["What is this?", "A chair.", "A bed."]


# ----------------------------------------------------------------------------- public formats
def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _pointllm_entry(object_id: str, first: str = f"{POINT_MARKER}\nWhat is this?") -> dict[str, Any]:
    return {
        "object_id": object_id,
        "conversation_type": "simple_description",
        "conversations": [{"from": "human", "value": first}, {"from": "gpt", "value": "A red chair."}],
    }


def test_read_pointllm(tmp_path: Path) -> None:
    pts = tmp_path / "points"
    pts.mkdir()
    cloud = np.random.default_rng(0).random((8192, 6)).astype(np.float32)
    for oid in ("abc123", "def456"):
        np.save(pts / f"{oid}_8192.npy", cloud)
    entry = _pointllm_entry("def456")
    entry["conversation_type"] = "multi_round"
    entry["conversations"] += [{"from": "human", "value": "Its colour?"}, {"from": "gpt", "value": "Red."}]
    anno = _write(tmp_path / "anno.json", [_pointllm_entry("abc123"), entry])
    got = read_conversations(anno, pts)
    assert [(c.object_id, f) for c, f in got] == [
        ("abc123", pts / "abc123_8192.npy"),
        ("def456", pts / "def456_8192.npy"),
    ]
    assert got[0][0].question == "What is this?" and got[0][0].answer == "A red chair."
    assert got[1][0].answer == "Red." and got[1][0].meta["conversation_type"] == "multi_round"
    assert got[0][0].kind == "instruction" and got[0][0].label is None
    assert np.load(got[0][1]).shape == (8192, 6)
    assert read_conversations(anno, pts, format="pointllm") == got


def test_read_shapellm_beside_the_json(tmp_path: Path) -> None:
    (tmp_path / "pcs").mkdir()
    np.save(tmp_path / "pcs" / "Box_100129_0_0.npy", np.zeros((16, 6), np.float32))
    data = [
        {
            "id": "Box_100129_0_0",
            "point": "pcs/Box_100129_0_0.npy",
            "rotation": [0, 0, 90],
            "conversations": [
                {"from": "user", "value": f"Where is the handle?\n{POINT_MARKER}"},
                {"from": "Assistant", "value": "On the lid."},
            ],
        },
        {"point": "pcs/Box_100129_0_0.npy", "conversations": _pointllm_entry("x")["conversations"]},
    ]
    got = read_conversations(_write(tmp_path / "sft.json", data))
    assert [c.object_id for c, _ in got] == ["Box_100129_0_0", "Box_100129_0_0"]
    assert got[0][1] == tmp_path / "pcs" / "Box_100129_0_0.npy"
    assert got[0][0].turns[0][0] == "human" and got[0][0].turns[1][0] == "gpt"
    assert got[0][0].question == "Where is the handle?" and got[0][0].meta == {"rotation": [0, 0, 90]}
    assert read_conversations(tmp_path / "sft.json", format="shapellm") == got


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        ("{not json", ValueError, "not valid JSON"),
        ({"a": 1}, ValueError, "expected a JSON list"),
        ([["x"]], ValueError, "entry 0 is a list"),
        ([{"conversations": []}], ValueError, "neither 'object_id'"),
        ([{"object_id": "abc123"}], ValueError, "no 'conversations'"),
        ([{"object_id": "abc123", "conversations": [{"value": "hi"}]}], ValueError, "'from' and 'value'"),
        ([_pointllm_entry("abc123", "What is this?")], ValueError, "no '<point>' marker"),
        (
            [{"object_id": "abc123", "conversations": [{"from": "gpt", "value": "<point>"}] * 2}],
            ValueError,
            "alternate",
        ),
        (
            [{"object_id": "abc123", "conversations": [{"from": "robot", "value": "<point>"}]}],
            ValueError,
            "'robot'",
        ),
        ([_pointllm_entry("zzz")], FileNotFoundError, r"'zzz'.*tried .*zzz_8192\.npy"),
        (
            [{"point": "nope.npy", "conversations": _pointllm_entry("x")["conversations"]}],
            FileNotFoundError,
            "nope",
        ),
    ],
)
def test_read_bad_input_names_the_file(tmp_path: Path, content: Any, error: type, message: str) -> None:
    np.save(tmp_path / "abc123_8192.npy", np.zeros((4, 6), np.float32))
    anno = tmp_path / "bad.json"
    anno.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    with pytest.raises(error, match=message) as info:
        read_conversations(anno)
    assert str(info.value).startswith(str(anno))


def test_read_missing_file_and_format(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such instruction file"):
        read_conversations(tmp_path / "none.json")
    with pytest.raises(ValueError, match="unknown instruction format"):
        read_conversations(tmp_path / "none.json", format="llava")
    anno = _write(tmp_path / "a.json", [{"point": "p.npy", "conversations": []}])
    with pytest.raises(ValueError, match="no 'object_id'"):
        read_conversations(anno, format="pointllm")


# ----------------------------------------------------------------------------- scoring
def test_normalise() -> None:
    assert normalise("  It's a Night_Stand!\n(tv-stand), ") == "its a night stand tv stand"
    assert normalise("") == ""


def test_class_mentioned_every_modelnet40_name(modelnet: tuple[np.ndarray, list[str]]) -> None:
    _, classes = modelnet
    for c, name in enumerate(classes):
        shown = name.replace("_", " ")
        assert class_mentioned(f"This is a {shown}.", classes) == [c], name
        assert class_mentioned(f"I see two {shown}s here", classes) == [c], name
        assert class_mentioned(name.upper(), classes) == [c], name
        assert generative_correct(f"It looks like a {shown}, I think.", c, classes), name
    for name in MULTI_WORD:
        first, second = name.split("_")
        assert class_mentioned(f"a {first}{second}", classes) == []  # not a whole-word phrase
        assert class_mentioned(f"a {first}-{second}", classes) == [classes.index(name)]


def test_class_mentioned_rules() -> None:
    classes = ["stand", "tv_stand", "night_stand", "box", "glass_box", "plant", "flower_pot", "cup"]
    assert class_mentioned("A TV stand.", classes) == [1]
    assert class_mentioned("two night stands", classes) == [2]
    assert class_mentioned("a stand next to a tv stand", classes) == [0, 1]
    assert class_mentioned("glass boxes", classes) == [4]
    assert class_mentioned("a box", classes) == [3]
    assert class_mentioned("a flower pot with a plant", classes) == [5, 6]
    assert class_mentioned("a cupboard", classes) == []  # whole words only
    assert class_mentioned("", classes) == []
    assert generative_correct("a tv stand", 1, classes)
    assert not generative_correct("a flower pot with a plant", 6, classes)
    assert not generative_correct("no idea", 7, classes)
    assert not generative_correct("a cup", 6, classes)


def test_exact_match() -> None:
    assert exact_match("Yes, it is.", "Yes.")
    assert exact_match("no", "No.")
    assert not exact_match("No, it is not.", "Yes.")
    assert not exact_match("I think yes", "Yes.")
    assert not exact_match("", "Yes.")
    assert exact_match("Night stand", "night_stand.")
    assert exact_match("  This is an AIRPLANE ", "This is an airplane.")
    assert not exact_match("This is an airplane, I think.", "This is an airplane.")
