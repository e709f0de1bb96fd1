"""nasforge: neural architecture search on PyTorch."""

from importlib.metadata import PackageNotFoundError, version as _dist_version

try:
    __version__ = _dist_version("nasforge")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
