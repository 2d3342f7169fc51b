"""One module per input format; each turns a request body into LLMEvents (see ``base``)."""
