"""Conversations about one point cloud: the samples of the 3D captioning / question-answering bridge.

The bridge follows PointLLM's recipe (point tokens -> projector -> causal LM), so its samples have
PointLLM's shape: a few human/gpt turns whose first human turn holds the marker "<point>" where the
point tokens go. This module holds that structure (`Conversation`), a corpus generated from ModelNet40
labels (`modelnet40_conversations`: train and held-out question phrasings never overlap, so a test can
ask in words training never used), readers for the two public instruction formats (so users train on
them unchanged) and the pure-python scoring rules the evaluation uses.

What the public formats are, as read from their own loaders:

- PointLLM (OpenRobotLab/PointLLM, pointllm/data/object_point_dataset.py, `ObjectPointCloudDataset`):
  the annotation file is one JSON list; each entry has "object_id", "conversations" (a list of
  {"from": "human" | "gpt", "value": str}) and an optional "conversation_type" (the loader's default
  is "simple_description"; others are "detailed_description", "single_round", "multi_round"). The
  point file is `os.path.join(data_path, f"{object_id}_{pointnum}.npy")` with pointnum 8192 by default,
  an (N, 6) array of xyz + rgb in 0-1. An entry is multimodal when "<point>" is in the first turn's
  value (`self.point_indicator = '<point>'`); the loader keeps the others as text-only, we refuse them.
- ShapeLLM (qizekun/ShapeLLM, llava/train/train.py, `LazySupervisedDataset`; llava/constants.py;
  llava/mm_utils.py): a JSON list whose entries have "conversations" (the same {"from", "value"} turns;
  `preprocess_v1` maps only the roles "human" and "gpt") and, when a point cloud goes with them,
  "point": a file path joined to the `--point_folder` argument (`os.path.join(point_folder,
  point_file)`); an optional "rotation" ([x, y, z] degrees) rotates the cloud. The marker is
  `DEFAULT_POINT_TOKEN = "<point>"`, which `preprocess_multimodal` moves to the front of its turn.
  `load_pts` reads .npy, .npz (key "pred"), .ply, .txt and .pt/.pth files. Not confirmed: an object
  id key. Entries in LLaVA's convention carry "id", so we take "id" when present and the point file's
  stem otherwise; entries without "point" (text-only) are refused, like PointLLM's.

Roles "user"/"assistant" (other LLaVA-style files) are accepted as "human"/"gpt", case-insensitively.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from svl.vocab import class_descriptions, display_name, name_key

__all__ = [
    "CONVERSATION_KINDS",
    "GENERATED_KINDS",
    "PHRASINGS",
    "POINT_MARKER",
    "Conversation",
    "class_mentioned",
    "corpus_text",
    "exact_match",
    "generative_correct",
    "modelnet40_conversations",
    "normalise",
    "read_conversations",
]

POINT_MARKER = "<point>"  # PointLLM's point_indicator and ShapeLLM's DEFAULT_POINT_TOKEN
GENERATED_KINDS = ("caption", "what", "yesno", "choice")
CONVERSATION_KINDS = (*GENERATED_KINDS, "instruction")  # "instruction": a conversation from a public file
_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}
_FORMATS = ("auto", "pointllm", "shapellm")

# Question templates per kind and phrasing set. "heldout" shares no template with "train", so a model
# scored on held-out phrasings answers questions worded in ways it never saw. {np}: the class with its
# article ("an airplane"); {opts}: the options ("airplane, bed, chair or lamp").
PHRASINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "caption": (
            "Describe this shape.",
            "Give a short description of this object.",
            "What does this object look like?",
            "Briefly describe the 3D shape.",
            "Describe the object in one sentence.",
            "Tell me what this shape looks like.",
            "Give a one-line description of the object.",
            "What can you say about this object's shape?",
            "Please describe this object.",
            "Explain what this 3D object looks like.",
        ),
        "what": (
            "What is this object?",
            "What is this?",
            "Identify this object.",
            "What kind of object is this?",
            "Name the object shown.",
            "What object does this point cloud show?",
            "Tell me what this object is.",
            "What is shown here?",
            "Please name this object.",
            "What is the category of this object?",
        ),
        "yesno": (
            "Is this {np}?",
            "Is this object {np}?",
            "Does this shape show {np}?",
            "Could this be {np}?",
            "Is the object shown {np}?",
            "Is this shape {np}?",
            "Do you think this is {np}?",
            "Does this point cloud show {np}?",
            "Yes or no: is this {np}?",
            "Is what I see here {np}?",
        ),
        "choice": (
            "Which of these is it: {opts}?",
            "Pick the right category: {opts}.",
            "Choose one: {opts}. What is this object?",
            "Which class does this shape belong to: {opts}?",
            "Select the correct label for this object from {opts}.",
            "Is it {opts}?",
            "From {opts}, pick the one this object is.",
            "Which one is this: {opts}?",
            "Options: {opts}. Which fits this shape?",
            "Which label fits best, {opts}?",
        ),
    },
    # a third set for validation: settings are chosen on unseen wordings without the test's own
    "val": {
        "caption": (
            "Could you describe the object in this point cloud?",
            "What would you say this shape looks like?",
            "Provide a short description of the 3D object.",
        ),
        "what": (
            "Do you know what this object is?",
            "What would you call this shape?",
            "What sort of thing is this?",
        ),
        "yesno": (
            "Is this thing {np}?",
            "Would this be {np}?",
            "Tell me if this is {np}.",
        ),
        "choice": (
            "Between {opts}, what is this?",
            "Which would you pick for this object: {opts}?",
            "Is this shape one of {opts}? Which one?",
        ),
    },
    "heldout": {
        "caption": (
            "How would you describe this point cloud?",
            "Write a one-sentence description of what you see.",
            "Summarise the geometry of this object.",
        ),
        "what": (
            "Can you tell me what this shape is?",
            "What category would you put this shape in?",
            "Which object is represented here?",
        ),
        "yesno": (
            "Would you say this is {np}?",
            "Am I looking at {np} here?",
            "Is it true that this point cloud is {np}?",
        ),
        "choice": (
            "Out of {opts}, which one best matches this shape?",
            "Here are some options: {opts}. Which one is shown?",
            "Tell me which of {opts} this point cloud is.",
        ),
    },
}


# ----------------------------------------------------------------------------- the structure
def _turns_problem(turns: Sequence[tuple[str, str]]) -> str | None:
    """Why these turns are not a conversation about a point cloud (None: they are)."""
    if not turns:
        return "has no turns"
    for k, (role, text) in enumerate(turns):
        want = "human" if k % 2 == 0 else "gpt"
        if role != want:
            return f"turn {k + 1} is from {role!r}, expected {want!r} (roles must alternate human/gpt)"
        if not isinstance(text, str):
            return f"turn {k + 1} has a value that is not a string"
    if len(turns) < 2:
        return "has no gpt answer"
    if POINT_MARKER not in turns[0][1]:
        return f"the first human turn has no {POINT_MARKER!r} marker"
    return None


@dataclass
class Conversation:
    """A conversation about one point cloud: human/gpt turns, the first human turn holding POINT_MARKER.

    `index` is the shape's row in the array it was generated from (so a caller maps `object_id` back to
    its cloud without parsing); `meta` keeps what a public file said beyond the turns (conversation_type,
    rotation).
    """

    object_id: str
    turns: list[tuple[str, str]]
    kind: str
    label: int | None = None
    options: list[str] | None = None
    index: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.turns = [(str(r), t) for r, t in self.turns]
        problem = _turns_problem(self.turns)
        if problem is not None:
            raise ValueError(f"conversation {self.object_id!r}: {problem}")
        if self.kind not in CONVERSATION_KINDS:
            raise ValueError(
                f"conversation {self.object_id!r}: unknown kind {self.kind!r}; use {CONVERSATION_KINDS}"
            )

    @property
    def question(self) -> str:
        """The first human turn without the point marker: what the model is asked."""
        return self.turns[0][1].replace(POINT_MARKER, "").strip()

    @property
    def answer(self) -> str:
        """The last gpt turn: the reference a generated answer is scored against."""
        return next(t for r, t in reversed(self.turns) if r == "gpt")


# ----------------------------------------------------------------------------- generated corpus
def _noun_phrase(name: str, descriptions: dict[str, str]) -> str:
    """The class with its article: "an airplane", "an xbox", "a set of stairs".

    The shipped description's head ("an xbox: ...") says how the class is read, which a vowel rule gets
    wrong for names like "xbox"; a head without an article is a plural ("stairs") and reads "a set of".
    """
    shown = display_name(name).lower()
    head = descriptions.get(name_key(name), "").split(":", 1)[0].strip().lower()
    if head in (f"a {shown}", f"an {shown}"):
        return head
    if head == shown:
        return f"a set of {shown}"
    return f"{'an' if shown[:1] in 'aeiou' else 'a'} {shown}"


def _options_text(names: Sequence[str]) -> str:
    """'airplane, bed, chair or lamp'."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sentence(text: str) -> str:
    """One sentence: capitalised, ending in a full stop."""
    text = _capitalise(text.strip())
    return text if text.endswith((".", "!", "?")) else text + "."


def _pick(rng: random.Random, templates: Sequence[str], n: int) -> list[str]:
    """n templates, distinct while there are enough, in a seeded order."""
    out: list[str] = []
    while len(out) < n:
        out += rng.sample(list(templates), min(len(templates), n - len(out)))
    return out


def modelnet40_conversations(
    labels: np.ndarray,
    classes: Sequence[str],
    split: str,
    *,
    phrasings: str = "train",
    kinds: Iterable[str] = GENERATED_KINDS,
    per_shape: int = 1,
    seed: int = 0,
    id_prefix: str = "modelnet40",
    templates: int | None = None,
) -> list[Conversation]:
    """Single-round conversations about labelled shapes, `per_shape` per shape and kind.

    Every shape i gets object_id f"{id_prefix}/{split}/{i:05d}" and `index` i, so the training corpus
    is built from training labels only and no test shape leaks into it. Answers: "caption" -> the
    shipped description as one sentence (also the reference caption); "what" -> "This is an airplane.";
    "yesno" -> "Yes."/"No." (the true class asked half the time, seeded); "choice" -> the true class
    among 4 distinct options in a seeded order (kept in `options`). Each (shape, kind, repeat) draws from
    its own generator seeded by (seed, i, kind), so the output is deterministic in `seed` and a shape's
    conversations do not change when other kinds or shapes are added. Class names show with spaces.
    `templates`: use only the first N question templates of each kind (fewer wordings to learn from).
    """
    if phrasings not in PHRASINGS:
        raise ValueError(f"unknown phrasings {phrasings!r}; use one of {tuple(PHRASINGS)}")
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in GENERATED_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown kinds {bad or kinds!r}; use some of {GENERATED_KINDS}")
    if per_shape < 1:
        raise ValueError(f"per_shape must be >= 1, got {per_shape}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    names = [display_name(c).lower() for c in classes]
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"labels must lie in [0, {len(names)}), got {labels.min()}..{labels.max()}")
    if "choice" in kinds and len(names) < 4:
        raise ValueError(f"'choice' needs at least 4 classes, got {len(names)}")
    if "yesno" in kinds and len(names) < 2:
        raise ValueError(f"'yesno' needs at least 2 classes, got {len(names)}")
    descriptions = class_descriptions()
    if "caption" in kinds:
        missing = sorted({names[int(y)] for y in labels if name_key(names[int(y)]) not in descriptions})
        if missing:
            raise ValueError(
                "'caption' needs a shipped description (svl/data/labels/class_descriptions.json) for: "
                + ", ".join(missing)
            )
    phrases = [_noun_phrase(n, descriptions) for n in names]
    table = PHRASINGS[phrasings]
    if templates is not None:
        if templates < 1:
            raise ValueError(f"templates must be >= 1, got {templates}")
        table = {k: v[:templates] for k, v in table.items()}

    out: list[Conversation] = []
    for i, y in enumerate(labels.tolist()):
        object_id = f"{id_prefix}/{split}/{i:05d}"
        for kind in kinds:
            rng = random.Random(f"svl.instructions/{seed}/{i}/{kind}")  # str seeds: stable across runs
            for template in _pick(rng, table[kind], per_shape):
                options = None
                if kind == "caption":
                    question, answer = template, _sentence(descriptions[name_key(names[y])])
                elif kind == "what":
                    question, answer = template, f"This is {phrases[y]}."
                elif kind == "yesno":
                    asked = y if rng.random() < 0.5 else rng.choice([c for c in range(len(names)) if c != y])
                    question, answer = template.format(np=phrases[asked]), "Yes." if asked == y else "No."
                else:
                    others = rng.sample([c for c in range(len(names)) if c != y], 3)
                    order = [y, *others]
                    rng.shuffle(order)
                    options = [names[c] for c in order]
                    question, answer = template.format(opts=_options_text(options)), _sentence(names[y])
                turns = [("human", f"{POINT_MARKER}\n{question}"), ("gpt", answer)]
                out.append(Conversation(object_id, turns, kind, label=y, options=options, index=i))
    return out


def corpus_text(conversations: Iterable[Conversation], *, unique: bool = False) -> list[str]:
    """Every turn as plain text (marker removed), in order: what a small LM and its tokenizer learn from.

    Repeats are kept by default because their frequency is part of what the LM should learn.
    """
    out: list[str] = []
    seen: set[str] = set()
    for conv in conversations:
        for _, text in conv.turns:
            text = " ".join(text.replace(POINT_MARKER, " ").split())
            if text and not (unique and text in seen):
                seen.add(text)
                out.append(text)
    return out


# ----------------------------------------------------------------------------- public formats
def _load_json(path: Path) -> list[Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such instruction file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of conversation entries, got a {type(data).__name__}")
    return data


def _entry_format(path: Path, k: int, entry: dict[str, Any]) -> str:
    """'shapellm' for entries naming a "point" file, 'pointllm' for entries with an "object_id"."""
    if "point" in entry:
        return "shapellm"
    if "object_id" in entry:
        return "pointllm"
    raise ValueError(
        f"{path}: entry {k} has neither 'object_id' (PointLLM) nor 'point' (ShapeLLM); "
        "text-only entries are not supported"
    )


def _entry_turns(path: Path, where: str, entry: dict[str, Any]) -> list[tuple[str, str]]:
    convs = entry.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise ValueError(f"{path}: {where} has no 'conversations' list")
    turns = []
    for j, turn in enumerate(convs):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or "value" not in turn:
            raise ValueError(f"{path}: {where}, turn {j + 1} must be an object with 'from' and 'value'")
        role = _ROLES.get(turn["from"].strip().lower())
        if role is None:
            raise ValueError(
                f"{path}: {where}, turn {j + 1} is from {turn['from']!r}; use one of {sorted(_ROLES)}"
            )
        if not isinstance(turn["value"], str):
            raise ValueError(f"{path}: {where}, turn {j + 1} has a 'value' that is not a string")
        turns.append((role, turn["value"]))
    problem = _turns_problem(turns)
    if problem is not None:
        raise ValueError(f"{path}: {where}: {problem}")
    return turns


def read_conversations(
    path: str | Path,
    points_dir: str | Path | None = None,
    format: str = "auto",
    *,
    pointnum: int = 8192,
    check_files: bool = True,
) -> list[tuple[Conversation, Path]]:
    """Read a PointLLM or ShapeLLM instruction file: each conversation with the point file it names.

    Point files resolve against `points_dir`, else the JSON file's folder. PointLLM names
    f"{object_id}_{pointnum}.npy"; ShapeLLM names the file in "point". format "auto" decides per entry
    ("point" -> ShapeLLM, "object_id" -> PointLLM). Every problem is one ValueError / FileNotFoundError
    naming the file and the entry: not JSON, not a list, no conversations, roles that do not alternate
    human/gpt, a first human turn without "<point>", a missing point file (with the path tried).
    `check_files=False` skips the existence checks (one stat per entry) for very large files.
    """
    if format not in _FORMATS:
        raise ValueError(f"unknown instruction format {format!r}; use one of {_FORMATS}")
    path = Path(path)
    root = Path(points_dir) if points_dir is not None else path.parent
    if check_files and not root.is_dir():
        raise FileNotFoundError(f"{path}: the point folder {root} does not exist")
    out: list[tuple[Conversation, Path]] = []
    for k, entry in enumerate(_load_json(path)):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {k} is a {type(entry).__name__}, expected an object")
        fmt = _entry_format(path, k, entry) if format == "auto" else format
        if fmt == "pointllm":
            object_id = entry.get("object_id")
            if not isinstance(object_id, str) or not object_id:
                raise ValueError(f"{path}: entry {k} has no 'object_id' (a PointLLM entry needs one)")
            file = root / f"{object_id}_{pointnum}.npy"
            meta = {"conversation_type": entry.get("conversation_type", "simple_description")}
        else:
            point = entry.get("point")
            if not isinstance(point, str) or not point:
                raise ValueError(f"{path}: entry {k} has no 'point' file (a ShapeLLM entry needs one)")
            object_id = str(entry.get("id", Path(point).stem))
            file = root / point
            meta = {key: entry[key] for key in ("rotation",) if key in entry}
        where = f"entry {k} (object {object_id!r})"
        turns = _entry_turns(path, where, entry)
        if check_files and not file.is_file():
            raise FileNotFoundError(f"{path}: {where}: point file not found (tried {file})")
        out.append((Conversation(object_id, turns, "instruction", meta=meta), file))
    return out


# ----------------------------------------------------------------------------- scoring
_APOSTROPHES = re.compile(r"['\u2019]")
_NOT_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    """The text answers are compared in: lower case, '_' and all punctuation gone, single spaces.

    Apostrophes are dropped ("it's" -> "its"); every other non-alphanumeric character (underscore,
    hyphen, full stop, comma ...) becomes a space, so "Night_stand." and "night-stand" read "night stand".
    """
    text = _APOSTROPHES.sub("", str(text).lower())
    return " ".join(_NOT_WORD.sub(" ", text).split())


def _name_forms(name: str) -> set[tuple[str, ...]]:
    """A class name as word tuples: as is, and with its last word pluralised by "s" or "es"."""
    words = tuple(normalise(name).split())
    if not words:
        return set()
    return {words, (*words[:-1], words[-1] + "s"), (*words[:-1], words[-1] + "es")}


def class_mentioned(answer: str, classes: Sequence[str]) -> list[int]:
    """The classes an answer names, in class order.

    A class is mentioned where its normalised name (or that name with a plural "s"/"es" on its last
    word) occurs as a run of whole words in the normalised answer. A match lying inside a longer match of
    another class does not count: "a tv stand" mentions "tv stand" and not "stand", "night stands"
    mentions "night stand" only. Overlapping matches that neither contains both count.
    """
    words = normalise(answer).split()
    spans: list[tuple[int, int, int]] = []  # (start, end, class)
    for c, name in enumerate(classes):
        for form in _name_forms(name):
            n = len(form)
            spans += [(s, s + n, c) for s in range(len(words) - n + 1) if tuple(words[s : s + n]) == form]
    found = set()
    for s, e, c in spans:
        inside = any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) and c2 != c for s2, e2, c2 in spans)
        if not inside:
            found.add(c)
    return sorted(found)


def generative_correct(answer: str, label: int, classes: Sequence[str]) -> bool:
    """PointLLM-style generative classification: right iff the true class and no other is mentioned."""
    return class_mentioned(answer, classes) == [int(label)]


def exact_match(answer: str, reference: str) -> bool:
    """Normalised equality; for a yes/no reference, the answer's first normalised word decides.

    "Yes, it is." matches "Yes."; "No." does not; "Chair." matches "chair".
    """
    ref, got = normalise(reference), normalise(answer)
    if ref in ("yes", "no"):
        return got.split()[:1] == [ref]
    return got == ref
