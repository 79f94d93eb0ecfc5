"""quickchat-async: an async Python SDK for Quickchat AI's Chat endpoint."""

from ._version import __version__

__all__ = ["__version__"]
