"""What a VLM answer means: its reasoning, whether it meets the requested format, and whether it raises
an alert (spec §4.7, §6.4).

Alert decisions are structured, never substring matches (the reference lower-cases the answer and looks
for "yes" or "true" anywhere, so "eyes", "yesterday" or "Anomaly Detected: No ... untrue" fire). We read:
1. a JSON answer's `decision` field ("Yes"/"No"; also true/false) -- required when the json_schema
   has a `decision` property, where any other value is a responseFormatError and raises nothing;
2. with a `choice` format, the chosen option when it is yes/true;
3. a labelled verdict line such as "Anomaly Detected: Yes", "Alert: no", "**Incident detected** - YES"
   (the label names an anomaly, alert, incident, violation, hazard or detection);
4. otherwise an answer whose first word is yes or true ("Yes, a worker ...").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jsonschema

from rtvi.core.models.common import json_answer
from rtvi.services.vlm.models.base import OutputFormat

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_VERDICT_LABEL = re.compile(r"anomal|alert|incident|violation|hazard|detect", re.IGNORECASE)
_VERDICT_LINE = re.compile(
    r"^[\s>*#_\-]*(?P<label>[A-Za-z][A-Za-z _\-]{0,60}?)[\s*_]*[:=\-][\s*_\"']*"
    r"(?P<value>yes|no|true|false)\b",
    re.IGNORECASE | re.MULTILINE,
)
_FIRST_WORD = re.compile(r"^[\s>*#_\"'`(\[]*(?P<word>[A-Za-z]+)")
_POSITIVE = {"yes", "true"}
_NEGATIVE = {"no", "false"}


@dataclass(frozen=True, slots=True)
class Answer:
    content: str  # the answer without its <think> block
    reasoning: str  # the <think> block's text ("" when there was none)
    format_error: str  # why the answer breaks the requested format ("" when it does not)
    alert: bool
    trigger: str  # the words that decided the alert (Incident.info.triggerPhrase)


def split_reasoning(text: str) -> tuple[str, str]:
    """-> (content, reasoning): `<think>...</think>` blocks (an unterminated one runs to the end) are
    taken out of the content, whatever enable_reasoning says, so they never leak into captions."""
    reasoning = "\n".join(m.strip() for m in _THINK.findall(text)).strip()
    content = _THINK.sub("", text).strip()
    return content, reasoning


def format_error(content: str, fmt: OutputFormat) -> str:
    """Why `content` breaks the requested format, or ""."""
    if fmt.type == "text":
        return ""
    if fmt.type == "choice":
        return (
            ""
            if content.strip() in fmt.choices
            else f"the answer is not one of the {len(fmt.choices)} choices"
        )
    value = json_answer(content)
    if not isinstance(value, dict):
        return "the answer is not a JSON object"
    if fmt.type == "json_schema" and fmt.json_schema is not None:
        # The error jsonschema.validate() would raise, without re-checking the schema itself on every
        # chunk (output_format checked it when the request came in).
        validator = jsonschema.validators.validator_for(fmt.json_schema)(fmt.json_schema)
        exc = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if exc is not None:
            where = "/".join(str(p) for p in exc.absolute_path) or "the answer"
            return f"{where}: {exc.message}"[:500]
    return ""


def check_schema(schema: dict[str, Any]) -> None:
    """Raises jsonschema.SchemaError for a schema that cannot validate anything."""
    jsonschema.validators.validator_for(schema).check_schema(schema)


def _schema_wants_decision(fmt: OutputFormat) -> bool:
    props = (fmt.json_schema or {}).get("properties")
    return fmt.type == "json_schema" and isinstance(props, dict) and "decision" in props


def decide(content: str, fmt: OutputFormat) -> tuple[bool, str, str]:
    """-> (alert, trigger phrase, format error) of an answer (see the module docstring)."""
    value = json_answer(content) if content.lstrip().startswith(("{", "`")) else None
    if _schema_wants_decision(fmt) or (isinstance(value, dict) and "decision" in value):
        decision = value.get("decision") if isinstance(value, dict) else None
        word = str(decision).strip().lower() if isinstance(decision, str | bool) else ""
        if word in _POSITIVE:
            return True, f"decision={decision}", ""
        if word in _NEGATIVE:
            return False, "", ""
        return False, "", f"decision must be 'Yes' or 'No', got {str(decision)[:60]!r}"
    if fmt.type == "choice":
        chosen = content.strip()
        return chosen.lower() in _POSITIVE, chosen if chosen.lower() in _POSITIVE else "", ""
    for m in _VERDICT_LINE.finditer(content):
        if _VERDICT_LABEL.search(m.group("label")):
            value_word = m.group("value").lower()
            positive = value_word in _POSITIVE
            return positive, f"{m.group('label').strip()}: {m.group('value')}" if positive else "", ""
    first = _FIRST_WORD.match(content)
    if first and first.group("word").lower() in _POSITIVE:
        return True, first.group("word"), ""
    return False, "", ""


def read_answer(text: str, fmt: OutputFormat) -> Answer:
    content, reasoning = split_reasoning(text)
    error = format_error(content, fmt)
    alert, trigger, decision_error = decide(content, fmt)
    return Answer(content, reasoning, error or decision_error, alert and not error, trigger)
