"""Keyword-only parameters in the public API, as delta-rs writes its signatures, with a shim for
callers written against the older positional forms."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def positional_deprecated(func: F) -> F:
    """Let ``func``'s keyword-only parameters still be passed positionally, in their declared
    order, with a ``DeprecationWarning`` that names them; ``inspect.signature`` and ``help``
    show the keyword-only signature."""
    parameters = inspect.signature(func).parameters.values()
    positional = sum(p.kind in POSITIONAL for p in parameters)
    keyword_only = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        extra = args[positional:]
        if not extra:
            return func(*args, **kwargs)
        if len(extra) > len(keyword_only):
            raise TypeError(
                f"{func.__name__}() takes at most {positional + len(keyword_only)} "
                f"arguments ({len(args)} given)"
            )
        names = keyword_only[: len(extra)]
        if given_twice := sorted(set(names) & kwargs.keys()):
            raise TypeError(f"{func.__name__}() got multiple values for {given_twice}")
        warnings.warn(
            f"{func.__name__}(): pass {', '.join(names)} by keyword "
            f"({', '.join(f'{n}=...' for n in names)}); passing them by position is deprecated",
            DeprecationWarning,
            stacklevel=2,
        )
        return func(*args[:positional], **kwargs, **dict(zip(names, extra, strict=True)))

    return wrapper  # type: ignore[return-value]
