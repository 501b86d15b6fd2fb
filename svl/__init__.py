"""svl: spike-based vision-language learning for point clouds and event streams."""

__version__ = "0.1.0"
