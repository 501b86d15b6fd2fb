"""Captions and answers about point-cloud files from a language-bridge checkpoint (`svl finetune
task=language`): `caption` over many files (errors="report" keeps the others going), `ChatSession` for
a conversation about one file (`svl chat`). Files are read the way the bridge's encoder was trained
(`svl.data.prepare` with its contract: up axis to z, centred, unit sphere, its point count)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from svl.data import load_points, prepare
from svl.infer.checks import point_count_warning, up_axis_warning
from svl.infer.files import FileErrors, each_file
from svl.models.language import LANGUAGE_KIND, POINT_MARKER, PointLanguageModel, batch_points, load_bridge

__all__ = ["CAPTION_PROMPT", "ChatSession", "caption", "load_language_model", "read_cloud"]

CAPTION_PROMPT = "Describe this shape."


def load_language_model(
    checkpoint: str | os.PathLike[str] | PointLanguageModel, lm: str | os.PathLike[str] | None = None
) -> PointLanguageModel:
    """The bridge of a `svl-language` checkpoint (`lm`: its language model moved to another folder)."""
    if isinstance(checkpoint, PointLanguageModel):
        return checkpoint.eval()
    if lm is None:
        from svl.models import load_model

        return load_model(checkpoint, kind=LANGUAGE_KIND).model
    return load_bridge(checkpoint, lm)


def read_cloud(model: PointLanguageModel, path: str | os.PathLike[str], up_axis: str | None = None,
               seed: int = 0) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """A file as the bridge's encoder reads it, and warnings (few points, an assumed up axis)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"point-cloud file {p} does not exist")
    meta = getattr(model, "meta", {}) or {}
    n = (meta.get("data") or {}).get("num_points")
    s = prepare(load_points(p), meta.get("contract"), up_axis=up_axis, num_points=n, seed=seed, where=str(p))
    warned = [point_count_warning(s["prepared"]["points_in"], n, str(p)),
              up_axis_warning(s["prepared"], meta.get("files_up_axis"), str(p))]  # fmt: skip
    return s, [w for w in warned if w]


def caption(
    checkpoint: str | os.PathLike[str] | PointLanguageModel,
    files: Sequence[str | os.PathLike[str]],
    *,
    prompt: str = CAPTION_PROMPT,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    up_axis: str | None = None,
    lm: str | os.PathLike[str] | None = None,
    errors: FileErrors = "raise",
) -> list[dict[str, Any]]:
    """One caption per file: `[{"file", "caption", "warnings"}, ...]` (greedy unless temperature > 0)."""
    if not files:
        raise ValueError("no point-cloud files given")
    model = load_language_model(checkpoint, lm)

    def one(_: int, p: str | os.PathLike[str]) -> dict[str, Any]:
        s, warned = read_cloud(model, p, up_axis)
        torch.manual_seed(seed)
        batch = {"points": batch_points([s]), "turns": [[("human", f"{POINT_MARKER}\n{prompt}")]]}
        [text] = model.generate(batch, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        return {"file": str(p), "caption": text, "warnings": warned}

    return each_file(files, one, errors)


class ChatSession:
    """A conversation about one point cloud: each `ask` sees the earlier questions and answers."""

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | PointLanguageModel,
        file: str | os.PathLike[str],
        *,
        up_axis: str | None = None,
        lm: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = load_language_model(checkpoint, lm)
        self.file = str(file)
        s, self.warnings = read_cloud(self.model, file, up_axis)
        with torch.no_grad():
            self.tokens = self.model.encoder_tokens(batch_points([s]))
        self.turns: list[tuple[str, str]] = []

    def ask(
        self,
        question: str,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Callable[[], bool] | None = None,
        on_token: Callable[[int], None] | None = None,
    ) -> str:
        """The answer to `question`, added to the conversation (the points go with the first question)."""
        q = question.strip()
        if not q:
            raise ValueError("empty question")
        text = f"{POINT_MARKER}\n{q}" if not self.turns else q
        turns = [*self.turns, ("human", text)]
        batch = {"sites": self.tokens[0], "global": self.tokens[1], "turns": [turns]}
        [answer] = self.model.generate(batch, max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_p=top_p, stop=stop, on_token=on_token)  # fmt: skip
        self.turns = [*turns, ("gpt", answer)]
        return answer
