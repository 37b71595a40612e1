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
    """An error about a size limit that bounds memory and time. The message ends with how to change the
    limit (raise it here; NotEnoughMemoryError says lower it); the Python hint (an argument or attribute) is the default, and the command line swaps in
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


class NotEnoughMemoryError(_LimitMixin, MemoryError):
    """An allocation failed for an input the limits let through. Like the limit errors, the message
    ends with what to change (here: which limit to lower, so such inputs are refused before any
    work) in Python terms, and ``cli_message`` names the command-line flag instead. A MemoryError,
    so ``except MemoryError`` still catches it."""

    def _message(self, hint: str) -> str:
        return f"{self.problem}. Free memory, or lower the limit so that such input is refused up front: {hint}"

    def cli_message(self) -> str:
        return self._message(f"rerun with a smaller {self.cli_flag} N")


def is_out_of_memory(error: BaseException) -> bool:
    """A failed allocation: MemoryError, or torch's RuntimeError for one (CPU "DefaultCPUAllocator:
    can't allocate memory", CUDA "out of memory"), told apart from other RuntimeErrors by its text."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def gib(n_bytes: float) -> str:
    """A byte count for a message: "2.3 GiB"."""
    return f"{n_bytes / 2 ** 30:.1f} GiB"


__all__ = ["CellLimitError", "ConfigError", "ImageError", "NotEnoughMemoryError", "PixelLimitError", "TokenError",
           "WeightsError"]
