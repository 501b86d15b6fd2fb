"""CLIP teachers for users who have weights: OpenCLIP and Hugging Face transformers CLIP.

Both load from a local checkpoint file or directory only (nothing is downloaded) and fail with
a clear error when the path is missing. open_clip is an optional extra (`pip install svl[clip]`):
it pulls torchvision, which breaks a CPU-only torch install, so svl never imports it eagerly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import TEACHERS, Teacher, register_aliases, set_offline

__all__ = ["OpenCLIPTeacher", "HFCLIPTeacher", "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _path_tag(path: Path) -> str:
    """Short identity of a checkpoint (resolved path, size, mtime) for cache keys, without hashing GBs."""
    st = path.stat()
    h = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return h[:10]


def _image_size(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise ValueError(f"cannot read a CLIP image size from {value!r}")


class _CLIPBase(Teacher):
    has_text = True
    has_image = True
    takes_path = True

    def _init_preprocess(self, size, mean, std) -> None:
        self.image_size = _image_size(size)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the tower's input size (bicubic, antialiased) and apply CLIP normalisation."""
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bicubic", antialias=True).clamp(0, 1)
        return (images - self._mean.to(images.device)) / self._std.to(images.device)


@TEACHERS.register("openclip")
class OpenCLIPTeacher(_CLIPBase):
    """An OpenCLIP model from a local checkpoint.

    path: a checkpoint file (needs `model_name`, e.g. "ViT-bigG-14") or a directory holding
    `open_clip_config.json` plus `open_clip_pytorch_model.bin` / `open_clip_model.safetensors`
    (the layout of OpenCLIP's Hugging Face releases).
    """

    description = "OpenCLIP model from a local checkpoint (needs open_clip_torch)"

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        model_name: str | None = None,
    ) -> None:
        super().__init__(device, batch_size)
        path = Path(path).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: OpenCLIP checkpoint not found (CLIP teachers load local files only)"
            )
        try:
            import open_clip
        except ImportError as e:
            raise ImportError(
                "the openclip teacher needs open_clip_torch (pip install 'svl[clip]'; it pulls torchvision, "
                "which must match your torch build)"
            ) from e
        ckpt = path
        cfg = None
        if path.is_dir():
            cfg_file = path / "open_clip_config.json"
            if not cfg_file.is_file():
                raise FileNotFoundError(f"{path}: directory has no open_clip_config.json")
            try:
                cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{cfg_file}: unreadable OpenCLIP config ({e})") from e
            names = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")
            found = [path / n for n in names if (path / n).is_file()]
            if not found:
                raise FileNotFoundError(f"{path}: no OpenCLIP weights file (looked for {', '.join(names)})")
            ckpt = found[0]
            model_name = model_name or cfg.get("model_name") or path.name
        if not model_name:
            raise ValueError(
                f"{path}: pass model_name (e.g. 'ViT-bigG-14') for a bare OpenCLIP checkpoint file"
            )
        if cfg is not None and "model_cfg" in cfg and hasattr(open_clip, "add_model_config"):
            _register_config(open_clip, model_name, cfg["model_cfg"])
        model = open_clip.create_model(model_name, pretrained=str(ckpt), device="cpu")
        self.model = self._freeze(model).to(self.device)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        visual = self.model.visual
        pre = (cfg or {}).get("preprocess_cfg", {})
        self._init_preprocess(
            pre.get("size", getattr(visual, "image_size", 224)),
            pre.get("mean", getattr(visual, "image_mean", None) or CLIP_MEAN),
            pre.get("std", getattr(visual, "image_std", None) or CLIP_STD),
        )
        self.model_name = model_name
        self.id = f"openclip-{model_name}-{_path_tag(ckpt)}"
        with torch.inference_mode():
            self.dim = int(self._embed_texts(["a"]).shape[-1])

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts)
        return self.model.encode_text(tokens.to(self.device))

    def _embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images))

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model]


def _register_config(open_clip, name: str, model_cfg: dict) -> None:
    """Make a directory's own model config visible to `open_clip.create_model` under `name`."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / f"{name}.json"
        f.write_text(json.dumps(model_cfg), encoding="utf-8")
        open_clip.add_model_config(f)


@TEACHERS.register("hf-clip")
class HFCLIPTeacher(_CLIPBase):
    """A transformers `CLIPModel` + tokenizer from a local directory written by `save_pretrained`.

    Guards against a transformers trap: with HF_HUB_OFFLINE set, `CLIPTokenizer.from_pretrained`
    on a directory without tokenizer files returns an empty 2-token tokenizer instead of failing;
    such a tokenizer would silently embed every text identically, so it is rejected here.
    """

    description = "Hugging Face transformers CLIP from a local directory"

    def __init__(
        self, path: str | Path, device: str | torch.device | None = None, batch_size: int = 64
    ) -> None:
        super().__init__(device, batch_size)
        path = Path(path).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: HF CLIP directory not found (CLIP teachers load local files only)"
            )
        if not path.is_dir() or not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: expected a directory with config.json (saved by save_pretrained)"
            )
        tok_files = ("tokenizer.json", "vocab.json")
        if not any((path / f).is_file() for f in tok_files):
            raise FileNotFoundError(
                f"{path}: no tokenizer files (need tokenizer.json or vocab.json + merges.txt)"
            )
        set_offline()
        from transformers import AutoTokenizer, CLIPModel

        try:
            model = CLIPModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot load a CLIPModel ({e})") from e
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        _check_tokenizer(tokenizer, model.config.text_config.vocab_size, path)
        self.tokenizer = tokenizer
        self.model = self._freeze(model).to(self.device)
        self.max_length = int(model.config.text_config.max_position_embeddings)
        mean, std = CLIP_MEAN, CLIP_STD
        pre_file = path / "preprocessor_config.json"
        if pre_file.is_file():
            try:
                pre = json.loads(pre_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{pre_file}: unreadable preprocessor config ({e})") from e
            mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
        self._init_preprocess(model.config.vision_config.image_size, mean, std)
        self.dim = int(model.config.projection_dim)
        weights = next(
            (path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), path
        )
        self.id = f"hf-clip-{path.name}-{_path_tag(weights)}"

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers < 5 returns a tensor; 5.x returns an output whose pooler_output is projected
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        return self._features(
            self.model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        )

    def _embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(self.model.get_image_features(pixel_values=self.preprocess(images)))

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model]


def _check_tokenizer(tokenizer, vocab_size: int, path: Path) -> None:
    n = len(tokenizer)
    if n <= 2:
        raise ValueError(
            f"{path}: tokenizer loaded with only {n} tokens (transformers returns an empty tokenizer when "
            "its files are missing or unreadable offline); point to a directory with the real tokenizer files"
        )
    if n > vocab_size:
        raise ValueError(f"{path}: tokenizer has {n} tokens but the text tower only {vocab_size} embeddings")
    ids = tokenizer("a photo of a chair")["input_ids"]
    specials = set(tokenizer.all_special_ids)
    content = [i for i in ids if i not in specials]
    unk = tokenizer.unk_token_id
    if not content or (unk is not None and all(i == unk for i in content)):
        raise ValueError(
            f"{path}: tokenizer maps plain English to unknown tokens only; its vocabulary is broken"
        )


register_aliases("openclip", "open_clip")
register_aliases("hf-clip", "hf_clip")
