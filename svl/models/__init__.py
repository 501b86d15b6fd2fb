"""Spiking 3D encoders and their registry: ``create_model``, ``list_models``, input contracts.

Importing this package imports every architecture file so their ``@register_model`` builders exist.
"""

from svl.models import (  # noqa: F401  (registers the architectures)
    detector,
    e3dsnn,
    language,  # noqa: F401  (registers the svl-language checkpoint kind)
    pointformer,
    pointnet,
    spikformer,
    unet,
)
from svl.models._registry import (
    MODELS,
    Contract,
    ModelInfo,
    PretrainedEntry,
    check_contract,
    count_params,
    get_pretrained,
    list_models,
    list_pretrained,
    model_info,
    register_model,
    register_pretrained,
)
from svl.models.loading import (
    CHECKPOINT_KINDS,
    LoadedModel,
    checkpoint_model_name,
    create_model,
    load_model,
    load_weights,
    register_checkpoint_kind,
)

__all__ = [
    "CHECKPOINT_KINDS",
    "LoadedModel",
    "ModelInfo",
    "load_model",
    "load_weights",
    "model_info",
    "register_checkpoint_kind",
    "MODELS",
    "Contract",
    "PretrainedEntry",
    "check_contract",
    "checkpoint_model_name",
    "count_params",
    "create_model",
    "get_pretrained",
    "list_models",
    "list_pretrained",
    "register_model",
    "register_pretrained",
]
