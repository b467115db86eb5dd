"""Offline interpretation appliance: room audio to live captions in every configured language."""

__version__ = "0.1.0"
__all__ = ["__version__"]
