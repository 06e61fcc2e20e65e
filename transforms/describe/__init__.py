"""Describers: turn a clip's signals (and, with a VLM, its frames) into a rich description."""

from transforms.config import DescribeConfig
from transforms.describe.offline import OfflineDescriber
from transforms.stage import Stage


def build_describer(config: DescribeConfig) -> Stage:
    """The describer stage for ``describe.backend``."""
    if config.backend == "offline":
        return OfflineDescriber(config)
    raise ValueError(f"describe.backend '{config.backend}' is not available")


__all__ = ["build_describer", "OfflineDescriber"]
