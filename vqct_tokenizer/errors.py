"""Errors a user can act on. All are ValueError subclasses so ``except ValueError`` catches bad input."""

from .config import ConfigError


class ImageError(ValueError):
    """An input image that cannot be used: unreadable, corrupt, empty, NaN/inf, out of range, wrong shape."""


class TokenError(ValueError):
    """A token grid of the wrong type, rank, last dimension or id range."""


class WeightsError(ValueError):
    """A weights file that is not safetensors, or whose keys or shapes do not match the config."""


__all__ = ["ConfigError", "ImageError", "TokenError", "WeightsError"]
