"""The relay's version: in the package metadata, the User-Agent and the spans' scope."""

__version__ = "0.1.0"
