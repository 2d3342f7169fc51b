"""The LLMEvent type and its JSON Schema."""

from schemas.llm_event import SCHEMA_ID, LLMEvent, Message, json_schema

__all__ = ["SCHEMA_ID", "LLMEvent", "Message", "json_schema"]
