"""Static-image datasets, image augmentations and the image batch, for 2D spiking transformers.

Why a package of its own: the 2D student (Spikformer) is distilled from image/text teachers on
plain pictures, which share nothing with the point pipeline but the conventions: datasets are
built by name from a registry (`IMAGE_DATASETS`, entry-point group ``svl.image_datasets``),
samples are dicts, augmentation randomness comes only from a generator derived from
(seed, epoch, index) so it is deterministic and resumable whatever the number of workers.
Everything is torch + numpy + PIL; torchvision is never imported.

Import it directly (``import svl.data.images``); ``import svl.data`` does not load it (torch).
Where things live: io.py (`read_image`, `resize_image`, `list_image_files`), batch.py
(`ImageBatch`, `collate_images`), transforms.py (`IMAGE_TRANSFORMS`, `build_image_transforms`),
base.py (`IMAGE_DATASETS`, `build_image_dataset`, `ImageDataset`), datasets.py (digits,
image_folder, modelnet40_views).
"""

from __future__ import annotations

from svl.data.images.base import (
    IMAGE_DATASETS,
    ImageDataset,
    build_image_dataset,
    image_dataset_options,
    list_image_datasets,
    register_image_dataset,
)
from svl.data.images.batch import ImageBatch, collate_images
from svl.data.images.datasets import (  # importing it registers the built-in image datasets
    DigitsDataset,
    ImageFolderDataset,
    ModelNet40Views,
    digits_split,
    render_modelnet40_views,
)
from svl.data.images.io import (
    IMAGE_SUFFIXES,
    ImageChannelsWarning,
    list_image_files,
    read_image,
    resize_image,
)
from svl.data.images.transforms import (
    IMAGE_TRANSFORMS,
    ImageCompose,
    build_image_transforms,
    list_image_transforms,
    register_image_transform,
)

__all__ = [
    "DigitsDataset",
    "IMAGE_DATASETS",
    "IMAGE_SUFFIXES",
    "IMAGE_TRANSFORMS",
    "ImageBatch",
    "ImageChannelsWarning",
    "ImageCompose",
    "ImageDataset",
    "ImageFolderDataset",
    "ModelNet40Views",
    "build_image_dataset",
    "build_image_transforms",
    "collate_images",
    "digits_split",
    "image_dataset_options",
    "list_image_datasets",
    "list_image_files",
    "list_image_transforms",
    "read_image",
    "register_image_dataset",
    "register_image_transform",
    "render_modelnet40_views",
    "resize_image",
]
