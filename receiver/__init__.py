"""HTTP receivers: the ingest routes, body decoding, and one normalizer per input format."""
