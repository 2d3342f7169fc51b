"""llm-broadcast-relay: the HTTP receiver, its decoders and normalizers, configuration and CLI."""

__version__ = "0.1.0"
