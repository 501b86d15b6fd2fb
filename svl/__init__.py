"""svl: spike-based vision-language learning for point clouds and event streams."""

__version__ = "0.1.0"


def create_model(name: str, pretrained: str | None = None, **overrides):  # noqa: ANN201
    """Build a registered model (see `svl.models.create_model`); imports torch only when called."""
    from svl.models import create_model as _create

    return _create(name, pretrained=pretrained, **overrides)


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered model names matching `pattern` (see `svl.models.list_models`)."""
    from svl.models import list_models as _list

    return _list(pattern, pretrained=pretrained)
