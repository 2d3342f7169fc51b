"""The relay's own telemetry: Prometheus metrics and structured JSON logs."""
