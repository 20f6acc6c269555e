"""How an answer is read (services/vlm/answers.py): reasoning, response_format checks, alert decisions."""

from __future__ import annotations

import pytest

from rtvi.services.vlm.answers import decide, format_error, read_answer, split_reasoning
from rtvi.services.vlm.models.base import OutputFormat

TEXT = OutputFormat()
VERDICT = OutputFormat(
    "json_schema",
    {"type": "object", "properties": {"decision": {"enum": ["Yes", "No"]}}, "required": ["decision"]},
)


@pytest.mark.parametrize(
    ("answer", "alert", "trigger"),
    [
        ("Anomaly Detected: Yes\nReason: no helmet", True, "Anomaly Detected: Yes"),
        ("**Anomaly Detected**: YES", True, "Anomaly Detected: YES"),
        ("Reason: blocked exit\nIncident detected - true", True, "Incident detected: true"),
        ("Yes, a forklift is within a metre of a worker.", True, "Yes"),
        ("TRUE", True, "TRUE"),
        ("Anomaly Detected: No\nReason: yes, everyone wears a vest", False, ""),
        ("The worker's eyes are protected by goggles.", False, ""),
        ("Nothing changed since yesterday.", False, ""),
        ("It is untrue that anything happened.", False, ""),
        ("No.", False, ""),
        ("", False, ""),
        ('{"decision": "Yes", "reason": "smoke"}', True, "decision=Yes"),
        ('{"decision": "No"}', False, ""),
    ],
)
def test_alert_decisions_are_structured(answer: str, alert: bool, trigger: str) -> None:
    got_alert, got_trigger, error = decide(answer, TEXT)
    assert (got_alert, got_trigger, error) == (alert, trigger, "")


def test_a_decision_schema_demands_yes_or_no() -> None:
    assert decide('{"decision": "Yes"}', VERDICT)[:2] == (True, "decision=Yes")
    alert, _, error = decide('{"decision": "Maybe"}', VERDICT)
    assert not alert and "Maybe" in error
    answer = read_answer("Yes!", VERDICT)  # not JSON at all: a format error, never an incident
    assert not answer.alert and answer.format_error


def test_choices_decide_by_the_chosen_option() -> None:
    fmt = OutputFormat("choice", choices=("Yes", "No"))
    assert decide("Yes", fmt)[0] and not decide("No", fmt)[0]
    assert format_error("Perhaps", fmt) and not format_error("No", fmt)


def test_reasoning_never_leaks_into_the_content() -> None:
    assert split_reasoning("<think>look left</think>\nYes") == ("Yes", "look left")
    assert split_reasoning("<think>still thinking") == ("", "still thinking")
    assert split_reasoning("plain") == ("plain", "")
    answer = read_answer("<think>the answer is yes</think>No", TEXT)
    assert (answer.content, answer.reasoning, answer.alert) == ("No", "the answer is yes", False)


def test_json_formats_are_checked() -> None:
    assert format_error('{"a": 1}', OutputFormat("json_object")) == ""
    assert format_error('```json\n{"a": 1}\n```', OutputFormat("json_object")) == ""
    assert format_error("[1, 2]", OutputFormat("json_object")) == "the answer is not a JSON object"
    assert "decision" in format_error('{"reason": "x"}', VERDICT)
    assert format_error('{"decision": "No"}', VERDICT) == ""


def test_captions_put_all_people_weight_on_the_largest_count() -> None:
    """The offline model's caption names one people concept: the largest count seen in the chunk."""
    import numpy as np

    from rtvi.services.vlm.models.offline import _people_as_one

    weights = np.zeros(1004, dtype=np.float32)
    weights[7] = 0.3  # an ImageNet class
    weights[1000], weights[1001] = 0.5, 0.25  # "a person" in some frames, "two people" in others
    merged = _people_as_one(weights, first=1000)
    assert merged[1001] == pytest.approx(0.75) and merged[1000] == 0 and merged[7] == pytest.approx(0.3)
    assert weights[1000] == 0.5  # the input is left as it was
    no_people = np.zeros(1004, dtype=np.float32)
    no_people[7] = 1.0
    assert _people_as_one(no_people, first=1000) is no_people
