"""Describers: turn a clip's signals (and, with a VLM, its frames) into a rich description.

Backends: ``offline`` (a text LLM over the signals, the demo default), ``transformers`` (an
in-process VLM) and ``openai`` (any OpenAI-compatible server such as vLLM).
"""

from core.config import DescribeConfig
from core.errors import UsageError
from transforms.describe.base import Describer


def describer_class(config: DescribeConfig) -> type[Describer]:
    """The describer stage class for ``describe.backend`` (imports only that backend)."""
    if config.backend == "offline":
        from transforms.describe.offline import OfflineDescriber

        return OfflineDescriber
    if config.backend == "transformers":
        from transforms.describe.vlm import TransformersDescriber

        return TransformersDescriber
    if config.backend == "openai":
        from transforms.describe.openai_api import OpenAIDescriber

        return OpenAIDescriber
    raise UsageError(f"describe.backend '{config.backend}' is not available")


def build_describer(config: DescribeConfig) -> Describer:
    """The describer stage for ``describe.backend``."""
    return describer_class(config)(config)


__all__ = ["Describer", "build_describer", "describer_class"]
