"""The ``weightshare`` command: thin over the Python API (see ``weightshare.pipeline``)."""

from .main import cli, main

__all__ = ["cli", "main"]
