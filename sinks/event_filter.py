"""``RELAY_<SINK>_FILTER``: which events a sink gets, as a Common Expression Language expression.

CEL (cel.dev) is the expression language of Kubernetes admission policies, Envoy and Google's IAM
conditions: side-effect free, always terminating, and known to the people who run this relay. It is
compiled by PyPI ``common-expression-language`` (cel-rust), chosen over ``cel-python`` because it
is 2 to 6 times faster here, compares an integer with a double (a JSON cost of ``0`` against
``0.01``) as CEL's spec says, and its errors do not quote the whole event.

The expression sees one variable, ``event``: the LLMEvent as the JSON the sinks write
(``event.status == "error"``, ``event.cost.total > 0.05``, ``event.source.gateway == "openrouter"``,
``!event.source.test``). A field the schema does not have (``event.stauts``) stops the start, since
it could never match. A field this event lacks (an unknown cost has no ``total``) is an error in
CEL: the event does not match, as ``has()`` would have said. Any other failure on an event (a
string compared with a number), or a verdict that is not a boolean, leaves the event out too, and
is reported (``FilterError``): the expression needs fixing.

Only the fields an expression names are handed to it: converting a whole event with its messages
took 375 µs, converting ``status`` alone 9 µs (measured here, about the relay's whole cost per
event). An expression that uses ``event`` as a whole (``size(event)``, ``event.exists(...)``,
``event[key]``) gets every field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from foundation.secrets import redact_text
from schemas import LLMEvent, json_schema

# Macros that bind a variable of their own: ``event.usage.exists(k, k == "input_tokens")``.
_BINDING: Final = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)")
# What may follow ``event`` for the expression to need only the fields it names: a field (not a
# method, ``event.size()``), or an index by a string literal (not ``event["sta" + "tus"]``).
_EVENT: Final = re.compile(r"\bevent\b")
_FIELD: Final = re.compile(r"\s*\.\s*[A-Za-z_]\w*(?!\w)(?!\s*\()")
_LITERAL_INDEX: Final = re.compile(r"""\s*\[\s*(?:"[^"\\]*"|'[^'\\]*')\s*\]""")
_WORD: Final = re.compile(r"[A-Za-z_]\w*")
# A path of fields from ``event``; the group after it is an opening parenthesis for a method call.
_PATH: Final = re.compile(r"\bevent((?:\s*\.\s*[A-Za-z_]\w*)+)(\s*\()?")
_STRING: Final = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_COMMENT: Final = re.compile(r"//[^\n]*")


class FilterSyntaxError(ValueError):
    """The expression cannot be compiled, or names a variable other than ``event``."""


@dataclass(frozen=True, slots=True, eq=False)
class EventFilter:
    """A compiled filter; ``matches`` says whether an event passes, raising ``FilterError``."""

    source: str
    _program: Any = field(repr=False)
    # The event's top-level fields the expression names; None: all of them.
    _fields: frozenset[str] | None = field(repr=False)

    @classmethod
    def compile(cls, source: str) -> EventFilter:
        # Imported here: the library (and the CLI toolkit it loads) costs 0.4 s and 30 MB, paid
        # only by a relay that has a filter.
        import cel

        try:
            program = cel.compile(source)
        except ValueError as error:
            raise FilterSyntaxError(_one_line(str(error))) from None
        bound = set(_BINDING.findall(source))
        unknown = sorted(set(program.variables()) - {"event"} - bound)
        if unknown:
            raise FilterSyntaxError(
                f"unknown variable {', '.join(unknown)}: the only variable is 'event'"
                ' (for example event.status == "error")'
            )
        if unknown := unknown_fields(source):
            raise FilterSyntaxError(
                f"no field {', '.join(unknown)} in the LLMEvent schema (see the README's"
                " 'The LLMEvent'); free-form keys live under event.attributes"
            )
        names = None if _uses_whole_event(source) else frozenset(_WORD.findall(source))
        return cls(source, program, names)

    def matches(self, event: LLMEvent) -> bool:
        fields = self._fields
        view = event if fields is None else {k: v for k, v in event.items() if k in fields}
        try:
            result = self._program.execute({"event": view})
        except KeyError:
            return False  # a field this event lacks: no match, as has() would have said
        except Exception as error:  # anything else one event makes of it: reported, not raised
            raise FilterError(_one_line(str(error))) from None
        if type(result) is not bool:
            raise FilterError(f"the filter gave {type(result).__name__}, not a boolean")
        return result


class FilterError(Exception):
    """The filter failed on one event (an absent field, a type mismatch)."""


def unknown_fields(source: str) -> list[str]:
    """The ``event.a.b`` paths of ``source`` that the LLMEvent schema cannot have, in order.

    Paths are followed while the schema knows the object's fields (``event``, ``source``,
    ``usage``, ``cost``, ...); free-form objects (``attributes``) and what lies past an index or
    a method call are not checked. String literals are left out of the search.
    """
    schema = json_schema()
    unknown: list[str] = []
    for match in _PATH.finditer(_COMMENT.sub("", _STRING.sub('""', source))):
        names = [name.strip() for name in match[1].split(".") if name.strip()]
        if match[2]:
            names.pop()  # event.exists(...), event.status.size(): a method, not a field
        node, path = schema, "event"
        for name in names:
            fields = node.get("properties")
            if fields is None:
                break
            path += "." + name
            if name not in fields:
                if node.get("additionalProperties") is False and path not in unknown:
                    unknown.append(path)
                break
            node = fields[name]
    return unknown


def _uses_whole_event(source: str) -> bool:
    """Whether ``event`` appears other than as ``event.<field>`` or ``event["<field>"]`` (in a
    string or a comment too: a wasted conversion, never a wrong verdict)."""
    for match in _EVENT.finditer(source):
        rest = source[match.end() :]
        if not (_FIELD.match(rest) or _LITERAL_INDEX.match(rest)):
            return True
    return False


def _one_line(message: str) -> str:
    """cel-rust's messages span lines (the expression, a caret): one line, of bounded length, for
    a log, the status page or a start-up refusal. Most name operators and types; some quote a
    value (a string ``duration()`` could not read, an overflowing number), so credentials in them
    are masked as everywhere else."""
    text = " | ".join(line.strip() for line in message.splitlines() if line.strip())
    return redact_text(text[:400])
