"""Where events go: the durable spool, the per-sink dispatchers and the sinks themselves."""
