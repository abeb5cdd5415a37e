"""realign: make SFT data better without collecting new data (ReAlign, production grade)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("realign")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
