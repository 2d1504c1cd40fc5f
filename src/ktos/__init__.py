"""ktos: KTO and sign-corrected KTO-S trained from a base model with no SFT, on TRL."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("ktos")  # pyproject.toml's version, read from the installed package's metadata
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
