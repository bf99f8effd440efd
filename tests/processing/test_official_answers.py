"""The authors' answer reading (issue 18 item 7): golden cases worked out by hand from their protocol.py and
evaluate.py (EthanLiang99/Zoom-IQA, commit f4dee23): the answer regex, json then dirtyjson, float() ratings
clipped to [1, 5], their error classes; and where it differs from the project's `strict` parser."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.processing.test_answers import FRAGMENTS
from zoomiqa_jax.inference.protocol import Protocol
from zoomiqa_jax.processing.answers import parse_zoomiqa_answer
from zoomiqa_jax.processing.official_answers import (
    AnswerParseError,
    answer_object,
    extract_rating,
    parse_official_answer,
)

FINAL = '{"bbox_2d": [0, 0, 0, 0], "rating": 3.25, "tool": "final"}'
CROP = '{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3.25, "tool": "crop"}'


def wrap(payload: str) -> str:
    return f"<think>looks fine</think><answer>{payload}</answer>"


@pytest.mark.parametrize(
    "text, rating, error, lenient",
    [
        (wrap(FINAL), 3.25, None, False),
        (wrap(f"\n  {FINAL}\n "), 3.25, None, False),  # \s* on both sides of the object
        # prose or a code fence inside the tags: the object must follow <answer> and precede </answer>
        (wrap(f"Rating: {FINAL}"), None, "missing_answer", False),
        (wrap(f"{FINAL} That is all."), None, "missing_answer", False),
        (wrap(f"```json\n{FINAL}\n```"), None, "missing_answer", False),
        ("<answer>" + FINAL, None, "missing_answer", False),  # no closing tag
        ("", None, "missing_answer", False),
        # dirtyjson after json: comments, single quotes, unquoted keys, trailing commas
        (wrap('{"bbox_2d": [0, 0, 0, 0], // none\n "rating": 2.5, "tool": "final"}'), 2.5, None, True),
        (wrap('{"bbox_2d": [0, 0, 0, 0], /* c */ "rating": 2.5, "tool": "final"}'), 2.5, None, True),
        (wrap("{'bbox_2d': [0, 0, 0, 0], 'rating': 4.5, 'tool': 'final'}"), 4.5, None, True),
        (wrap('{bbox_2d: [0, 0, 0, 0,], rating: 1.75, tool: "final",}'), 1.75, None, True),
        # curly quotes: neither json nor dirtyjson reads them
        (wrap("{\u201cbbox_2d\u201d: [0, 0, 0, 0], \u201crating\u201d: 3.0, \u201ctool\u201d: \u201cfinal\u201d}"),
         None, "malformed_json", False),
        (wrap('{"rating": 3.0, "tool": \u201cfinal\u201d}'), None, "malformed_json", False),
        (wrap("{not json at all}"), None, "malformed_json", False),
        # float() on the rating, then the clip to [1, 5]
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": true, "tool": "final"}'), 1.0, None, False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": false, "tool": "final"}'), 1.0, None, False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": "1_0", "tool": "final"}'), 5.0, None, False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": " 3.5 ", "tool": "final"}'), 3.5, None, False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": -2, "tool": "final"}'), 1.0, None, False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": 7.5, "tool": "final"}'), 5.0, None, False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": "3,5", "tool": "final"}'), None, "invalid_rating", False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": null, "tool": "final"}'), None, "invalid_rating", False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": [3], "tool": "final"}'), None, "invalid_rating", False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": NaN, "tool": "final"}'), None, "invalid_rating", False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "rating": "inf", "tool": "final"}'), None, "invalid_rating", False),
        (wrap('{"bbox_2d": [0, 0, 0, 0], "tool": "final"}'), None, "invalid_rating", False),
        (wrap('{"rating": 1' + "0" * 400 + "}"), None, "invalid_rating", False),  # float() overflows
    ],
)
def test_reply_reading(text, rating, error, lenient):
    answer = parse_official_answer(text)
    assert (answer.rating, answer.error, answer.lenient) == (rating, error, lenient)
    if error is None:
        assert extract_rating(text) == rating
    else:
        with pytest.raises(AnswerParseError) as caught:
            extract_rating(text)
        assert caught.value.kind == error


def test_two_answer_blocks():
    first, second = FINAL, FINAL.replace("3.25", "4.75")
    # both well formed: the first is used
    assert parse_official_answer(wrap(first) + wrap(second)).rating == 3.25
    # the first does not start with "{": the search moves on to the second
    assert parse_official_answer(wrap("prose " + first) + wrap(second)).rating == 4.75
    assert parse_official_answer(wrap("```\n" + first + "\n```") + wrap(second)).rating == 4.75
    # the first starts with "{" but ends in prose: the lazy group runs to the second block's "}", json fails,
    # dirtyjson reads the first object and ignores the rest
    run_on = parse_official_answer(wrap(first + " note") + wrap(second))
    assert (run_on.rating, run_on.lenient) == (3.25, True)
    payload, lenient = answer_object(wrap(first + " note") + wrap(second))
    assert (payload["rating"], lenient) == (3.25, True)


@pytest.mark.parametrize(
    "text, kind",
    [
        (None, "parse_error"),
        (3.5, "parse_error"),
        ("no tags", "missing_answer"),
        (wrap("{broken"), "missing_answer"),  # no "}" before </answer>
        (wrap("{'a': }"), "malformed_json"),
    ],
)
def test_answer_object_error_classes(text, kind):
    with pytest.raises(AnswerParseError) as caught:
        answer_object(text)
    assert caught.value.kind == kind
    answer = parse_official_answer(text)
    assert (answer.error, answer.routing.rounds, answer.routing.warning) == (kind, 1, kind)


@pytest.mark.parametrize(
    "payload, rounds, warning, rating, error",
    [
        (CROP, 2, None, 3.25, None),
        (FINAL, 1, None, 3.25, None),
        ('{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "tool": "crop"}', 1, "invalid_rating", None, "invalid_rating"),
        ('{"rating": 3.0, "tool": "crop"}', 1, "invalid_bbox", 3.0, None),  # a rating, no box: one round, valid
        ('{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3.0}', 1, "invalid_tool", 3.0, None),
        ('{"bbox_2d": 7, "rating": 3.0, "tool": "crop"}', 1, "invalid_bbox", 3.0, None),
        ('{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": "x", "tool": "crop"}', 2, None, None, "invalid_rating"),
    ],
)
def test_routing_and_rating_are_read_apart(payload, rounds, warning, rating, error):
    answer = parse_official_answer(wrap(payload))
    assert (answer.routing.rounds, answer.routing.warning, answer.rating, answer.error) == (
        rounds, warning, rating, error)
    assert answer.requests_crop == (rounds == 2)


def test_payload_is_plain_json_and_display_box():
    answer = parse_official_answer(wrap("{'bbox_2d': ['0.1', 0.2, 0.5, 0.6], 'rating': 3, 'tool': 'crop'}"))
    assert type(answer.payload) is dict and type(answer.payload["bbox_2d"]) is list
    assert answer.bbox == (0.1, 0.2, 0.5, 0.6)  # their _display_bbox: float() of each value
    assert answer.tool == "crop"
    assert parse_official_answer(wrap('{"bbox_2d": [1, 2], "rating": 3, "tool": "crop"}')).bbox is None


@pytest.mark.parametrize(
    "payload, official, strict",
    [
        # the project's strict parser reads these, the authors' do not (or read them differently)
        ("Rating: " + FINAL, None, 3.25),
        ("```json\n" + FINAL + "\n```", None, 3.25),
        ("{\u201crating\u201d: 3.0, \u201cbbox_2d\u201d: [0, 0, 0, 0], \u201ctool\u201d: \u201cfinal\u201d}",
         None, 3.0),
        ('{"bbox_2d": [0, 0, 0, 0], "rating": true, "tool": "final"}', 1.0, None),
        ('{"bbox_2d": [0, 0, 0, 0], "rating": "1_0", "tool": "final"}', 5.0, None),
    ],
)
def test_differs_from_strict(payload, official, strict):
    assert parse_official_answer(wrap(payload)).rating == official
    assert parse_zoomiqa_answer(wrap(payload)).rating == strict


def test_never_raises_on_hostile_replies():
    deep = wrap('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")  # RecursionError in json
    for text in (deep, wrap('{"rating": ' + "9" * 5000 + "}"), "<answer>" * 1000, wrap('{"rating": 1e999}'),
                 b"<answer>{}</answer>"):
        answer = parse_official_answer(text)
        assert answer.rating is None and answer.error is not None
        assert not math.isnan(answer.raw_rating or 0.0)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)))
def test_official_reading_never_raises_and_agrees_with_extract_rating(text):
    answer = parse_official_answer(text)
    assert answer.error is None or answer.rating is None
    try:
        rating = extract_rating(text)
    except AnswerParseError as err:
        assert answer.rating is None and answer.error == err.kind
    else:
        assert answer.rating == rating and 1.0 <= rating <= 5.0
    assert Protocol("official").answer_valid(answer) == (answer.rating is not None)
    Protocol("official").format_problems([text])
    Protocol("official").format_problems([text, text])
