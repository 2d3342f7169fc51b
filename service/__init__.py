"""The service: configuration, the running relay (spool, sinks, dispatchers), the HTTP app, CLI."""
