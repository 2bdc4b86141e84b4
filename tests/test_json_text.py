"""gRPC's JSON text is checked by orjson first and by the standard parser for whatever orjson refuses
(events.validation.parse_json_text): together they must accept and refuse exactly what the standard
parser with our strict rules does, and keep the text as sent."""

import pytest

from eventrelay.errors import InvalidInput
from events.validation import parse_json_text

ACCEPTED = [
    '{"a": [1, 2.5, -0, 1e-400, true, null], "b": {"c": "d"}}',
    "12345678901234567890",  # fits orjson's 64-bit integers
    "1" * 400,  # orjson refuses it (too large for a double); the standard parser keeps the integer
    "[" + "9" * 30 + "]",
    '"caf\\u00e9"',  # escapes always go through the standard parser
    " [ ] ",
]

REFUSED = [
    ("NaN", "is not valid JSON"),
    ('{"x": -Infinity}', "is not valid JSON"),
    ("1e400", "out of range for a double"),
    ('{"a": 1} trailing', "is not valid JSON"),
    ('"raw \x01 control"', "is not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "is nested 100000 levels deep; at most 64 are allowed"),  # ER_MAX_JSON_DEPTH
    ("1" * 5000, "has an integer of 5000 digits; at most 4300 are allowed"),  # Python's int/str conversion limit
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_json_text_that_is_json_is_kept_as_sent(text):
    assert parse_json_text(text, "events[0].data").text == text


@pytest.mark.parametrize(("text", "problem"), REFUSED)
def test_json_text_that_is_not_storable_json_is_refused_naming_the_problem(text, problem):
    with pytest.raises(InvalidInput) as error:
        parse_json_text(text, "events[4].data")
    assert error.value.field == "events[4].data"
    assert error.value.message.startswith("events[4].data: ")
    assert problem in error.value.message


def test_a_context_object_is_still_seen_to_be_an_object():
    assert isinstance(parse_json_text('{"ip": "127.0.0.1"}', "events[0].context").value, dict)
    assert isinstance(parse_json_text("[1]", "events[0].context").value, list)
