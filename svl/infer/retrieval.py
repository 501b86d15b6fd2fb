"""Place recognition with an image model: descriptors of image files (`image_descriptors`) and the
Recall@N of a checkpoint on a VPR split (`retrieve`, what `svl retrieve` prints). The ranking and the
recall are `svl.eval.retrieval`'s."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from svl.data.images import ImageChannelsWarning, collate_images, read_image, resize_image
from svl.data.readers.vpr import read_vpr
from svl.eval.retrieval import recall_at_k
from svl.models.loading import CLASSIFIER_KIND, load_model
from svl.utils import progress

__all__ = ["image_descriptors", "retrieve"]


@torch.no_grad()
def image_descriptors(
    model: nn.Module,
    paths: Sequence[Any],
    image_size: int,
    channels: int,
    batch_size: int = 64,
    desc: str = "descriptors",
) -> torch.Tensor:
    """(N, C) retrieval descriptors of image files: the pooled features of an image model (what its
    head reads), each image read with the model's channels (grey <-> RGB converted as PIL does; one
    `ImageChannelsWarning` for them all, naming the first) and resized to its input size."""
    model.eval()
    out = []
    converted: list[str] = []
    for a in progress(range(0, len(paths), batch_size), desc=desc, leave=False):
        items = []
        for i, p in enumerate(paths[a : a + batch_size]):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ImageChannelsWarning)
                img = resize_image(read_image(p, channels=channels, convert=True), image_size)
            converted += [str(w.message) for w in caught if issubclass(w.category, ImageChannelsWarning)]
            items.append({"image": img, "label": 0, "index": a + i})
        out.append(model.forward_features(collate_images(items))["pooled"].float())
    if converted:
        more = f" (and {len(converted) - 1} more {desc} images)" if len(converted) > 1 else ""
        warnings.warn(converted[0] + more, ImageChannelsWarning, stacklevel=2)
    return torch.cat(out) if out else torch.zeros(0)


def retrieve(
    model: str | os.PathLike[str] | nn.Module,
    root: str | os.PathLike[str],
    split: str = "test",
    *,
    threshold: float = 25.0,
    positives_file: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 64,
) -> dict[str, Any]:
    """Recall@N of an image model's descriptors on a place-recognition split (`read_vpr`: database
    images within `threshold` metres of a query, or those of `positives_file`, are its positives).

    `model`: an `svl distill` checkpoint (read with its trained image size and channels), or a built
    image model with its `image_size` and `channels`. Returns `recall_at_k`'s dict plus "database",
    "split", "root" and "warnings" (images converted between grey and RGB, one line per set).
    """
    if isinstance(model, nn.Module):
        if image_size is None or channels is None:
            raise ValueError("retrieve: a built model needs its image_size and channels")
    else:
        path = model
        loaded = load_model(path, kind=CLASSIFIER_KIND)
        model, data = loaded.model, loaded.meta.get("data") or {}
        if data.get("input") != "image":
            raise ValueError(f"{path}: not an image model (written by `svl distill`)")
        image_size, channels = int(data["image_size"]), int(data["channels"])
    vpr = read_vpr(root, split, threshold=threshold, positives_file=positives_file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageChannelsWarning)
        q = image_descriptors(model, vpr.queries, image_size, channels, batch_size, "queries")
        db = image_descriptors(model, vpr.database, image_size, channels, batch_size, "database")
    res = recall_at_k(q, db, vpr.positives(), ks=ks)
    res.update(database=len(vpr.database), split=vpr.split, root=str(vpr.root))
    res["warnings"] = [str(w.message) for w in caught if issubclass(w.category, ImageChannelsWarning)]
    return res
