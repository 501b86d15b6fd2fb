"""svl: spike-based vision-language learning for point clouds and event streams."""

from svl._version import __version__

__all__ = ["__version__", "create_model", "list_models"]


def create_model(name: str | None, pretrained: str | None = None, **overrides):  # noqa: ANN201
    """Build a registered model (see `svl.models.create_model`); imports torch only when called.

    `create_model(None, pretrained="run/final.safetensors")` builds whatever the checkpoint holds.
    """
    from svl.models import create_model as _create

    return _create(name, pretrained=pretrained, **overrides)


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered model names matching `pattern` (see `svl.models.list_models`)."""
    from svl.models import list_models as _list

    return _list(pattern, pretrained=pretrained)
