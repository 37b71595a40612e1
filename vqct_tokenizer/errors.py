"""Errors a user can act on. All are ValueError subclasses so ``except ValueError`` catches bad input.

This module imports nothing from the package, so every module can import it.
"""


class ConfigError(ValueError):
    """A config.json that is missing fields, has unknown fields, or holds absurd values."""


class ImageError(ValueError):
    """An input image that cannot be used: unreadable, corrupt, empty, NaN/inf, out of range, wrong shape."""


class TokenError(ValueError):
    """A token grid of the wrong type, rank, last dimension or id range."""


class WeightsError(ValueError):
    """A weights file that is not safetensors, or whose keys or shapes do not match the config."""


class _LimitMixin:
    """An input over a size limit that bounds memory and time. The message ends with how to raise the
    limit; the Python hint (an argument or attribute) is the default, and the command line swaps in
    its own flag (``cli_message``), so a CLI user is never told to edit a Python global."""

    def __init__(self, problem: str, python_hint: str, cli_flag: str) -> None:
        self.problem, self.python_hint, self.cli_flag = problem, python_hint, cli_flag
        super().__init__(self._message(python_hint))

    def _message(self, hint: str) -> str:
        return f"{self.problem}. If you trust this input, raise the limit: {hint}"

    def cli_message(self) -> str:
        return self._message(f"rerun with {self.cli_flag} N")

    def __reduce__(self):  # picklable (DataLoader workers), despite the three-argument constructor
        return (type(self), (self.problem, self.python_hint, self.cli_flag))


class PixelLimitError(_LimitMixin, ImageError):
    """An image with more pixels than a decoding or native-encoding limit allows."""


class CellLimitError(_LimitMixin, TokenError):
    """A token grid with more cells than ``decode`` will turn into an image."""


__all__ = ["CellLimitError", "ConfigError", "ImageError", "PixelLimitError", "TokenError", "WeightsError"]
