"""The vocabulary module: one home for class names, descriptions, templates and prompt averaging."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from svl.vocab import (
    MODELNET10_CLASSES,
    class_embeddings,
    class_texts,
    display_name,
    format_prompts,
    load_class_names,
    load_templates,
    name_key,
    prompt_average,
    read_list_file,
    templates_hash,
)


def test_class_texts_names_and_descriptions(shared_data) -> None:
    mn40 = (shared_data / "labels" / "modelnet40_shape_names.txt").read_text().split()
    sonn = (shared_data / "labels" / "scanobjectnn_shape_names_ext.txt").read_text().split()
    assert class_texts(["flower_pot", "chair"]) == ["flower pot", "chair"]
    for names in (mn40, sonn):
        descs = class_texts(names, "descriptions")
        assert len(descs) == len(names) == len(set(descs))
        for n, d in zip(names, descs):
            head, _, body = d.partition(":")
            assert n.replace("_", " ") in head and len(body.split()) >= 4, d
    assert class_texts(["Night_Stand"], "descriptions") == class_texts(["night stand"], "descriptions")
    with pytest.raises(ValueError, match="no description"):
        class_texts(["chair", "spaceship"], "descriptions")
    with pytest.raises(ValueError, match="unknown text mode"):
        class_texts(["chair"], "captions")


def test_name_key_and_display_name() -> None:
    assert name_key("Flower_Pot ") == name_key("flower  pot") == "flower pot"
    assert display_name("night_stand") == "night stand" and display_name("TV_Stand") == "TV Stand"


def test_shipped_class_lists_match_the_shared_data(shared_data: Path) -> None:
    mn40 = (shared_data / "labels" / "modelnet40_shape_names.txt").read_text().split()
    assert load_class_names("modelnet40") == mn40
    assert set(MODELNET10_CLASSES) <= set(mn40) and len(MODELNET10_CLASSES) == 10
    assert len(load_class_names("objaverse_lvis")) == 1156
    with pytest.raises(ValueError, match="unknown class list"):
        load_class_names("imagenet")


def test_templates_and_prompts() -> None:
    tmpl = load_templates()
    assert len(tmpl) == 64 and all(t.count("{}") == 1 for t in tmpl)
    assert format_prompts("flower_pot", ["a {}."]) == ["a flower pot."]
    assert templates_hash(tmpl) == templates_hash(list(tmpl)) != templates_hash(tmpl[::-1])
    with pytest.raises(ValueError, match="exactly one"):
        format_prompts("chair", ["no slot"])


def test_prompt_average_matches_a_hand_computed_mean() -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(3 * 4, 8, generator=g)
    want = torch.stack(
        [F.normalize(F.normalize(emb[4 * k : 4 * k + 4], dim=-1).mean(0), dim=0) for k in range(3)]
    )
    torch.testing.assert_close(prompt_average(emb, 3), want)


def test_class_embeddings_with_a_recording_teacher() -> None:
    seen: list[str] = []

    class Teacher:
        def embed_texts(self, texts: list[str]) -> torch.Tensor:
            seen.extend(texts)
            return torch.stack([torch.tensor([float(len(t)), 1.0]) for t in texts])

    out = class_embeddings(Teacher(), ["chair", "flower_pot"], ["a {}.", "the {}!"])
    assert seen == ["a chair.", "the chair!", "a flower pot.", "the flower pot!"]
    assert out.shape == (2, 2) and torch.allclose(out.norm(dim=-1), torch.ones(2))


def test_read_list_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("# comment\nchair\n\n  table \n")
    (tmp_path / "b.json").write_text('["sofa", "bed"]')
    (tmp_path / "bad.json").write_text('{"x": 1}')
    (tmp_path / "empty.txt").write_text("# nothing\n")
    assert read_list_file(tmp_path / "a.txt") == ["chair", "table"]
    assert read_list_file(tmp_path / "b.json") == ["sofa", "bed"]
    with pytest.raises(ValueError, match="JSON list of strings"):
        read_list_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="empty"):
        read_list_file(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_list_file(tmp_path / "nope.txt")
