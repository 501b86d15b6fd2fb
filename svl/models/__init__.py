"""Spiking 3D encoders and their registry: ``create_model``, ``list_models``, input contracts.

Importing this package imports every architecture file so their ``@register_model`` builders exist.
"""

from svl.models import detector, e3dsnn, pointformer, pointnet, spikformer, unet  # noqa: F401  (registers the architectures)
from svl.models._registry import (
    MODELS,
    Contract,
    PretrainedEntry,
    check_contract,
    checkpoint_model_name,
    count_params,
    create_model,
    get_pretrained,
    list_models,
    list_pretrained,
    register_model,
    register_pretrained,
)

__all__ = [
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
