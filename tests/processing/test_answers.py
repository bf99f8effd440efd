"""Answer parsers (issue 3): Zoom-IQA error classes, routing, format reward, restoration prompts, Q-Insight
and VisualQuality-R1 parsers, and a fuzz check that no parser ever raises."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zoomiqa_jax.processing.answers import (
    ERROR_KINDS,
    STAGE1_SECTIONS,
    STAGE2_SECTIONS,
    answer_block,
    check_qinsight_format,
    check_zoomiqa_format,
    extract_restoration_prompts,
    parse_qinsight_comparison,
    parse_qinsight_degradation,
    parse_qinsight_score,
    parse_visualquality_r1,
    parse_zoomiqa_answer,
    route_stage1,
    think_sections,
    zoomiqa_format_problems,
)


def think(labels, bodies=None):
    bodies = bodies or [f"body {i} of the {label}." for i, label in enumerate(labels)]
    lines = [f"{i + 1}) {lab}: {b}" for i, (lab, b) in enumerate(zip(labels, bodies))]
    return "<think>\n" + "\n".join(lines) + "\n</think>"


def answer(payload):
    return f"<answer>{payload}</answer>"


CROP = '{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3.25, "tool": "crop"}'
FINAL = '{"bbox_2d": [0, 0, 0, 0], "rating": 2.75, "tool": "final"}'
ROUND1_CROP = think(STAGE1_SECTIONS) + answer(CROP)
ROUND1_FINAL = think(STAGE1_SECTIONS) + answer(FINAL)
ROUND2 = think(STAGE2_SECTIONS) + "\n" + answer(FINAL)


# ---- parsing and error classes ----

def test_valid_answer_parses_every_field():
    parsed = parse_zoomiqa_answer(ROUND1_CROP)
    assert (parsed.rating, parsed.bbox, parsed.tool, parsed.errors, parsed.lenient) == (
        3.25, (0.1, 0.2, 0.5, 0.6), "crop", (), False)
    assert parsed.requests_crop and parsed.error is None


@pytest.mark.parametrize("raw,clipped", [(0.5, 1.0), (7, 5.0), ('"4.5"', 4.5), ('" 2 "', 2.0), ("-3", 1.0)])
def test_rating_number_or_numeric_string_is_clipped(raw, clipped):
    parsed = parse_zoomiqa_answer(answer(f'{{"bbox_2d": [0, 0, 0, 0], "rating": {raw}, "tool": "final"}}'))
    assert parsed.rating == clipped and not parsed.errors
    assert parsed.raw_rating == float(str(raw).strip('" '))


@pytest.mark.parametrize(
    "text,kind",
    [
        ("no tags at all", "missing_answer"),
        ("<answer>{\"rating\": 3} and never closed", "missing_answer"),
        ("</answer>{\"rating\": 3}<answer>", "missing_answer"),
        (answer("Rating: 3.5, Tool: Final"), "malformed_json"),
        (answer("[1, 2, 3]"), "malformed_json"),
        (answer('{"rating": 3.5, "tool": "final" "bbox_2d": [0,0,0,0]}'), "malformed_json"),
        (answer('{"bbox_2d": [0,0,0,0], "tool": "final"}'), "invalid_rating"),
        (answer('{"bbox_2d": [0,0,0,0], "rating": "good", "tool": "final"}'), "invalid_rating"),
        (answer('{"bbox_2d": [0,0,0,0], "rating": NaN, "tool": "final"}'), "invalid_rating"),
        (answer('{"bbox_2d": [0,0,0,0], "rating": Infinity, "tool": "final"}'), "invalid_rating"),
        (answer('{"bbox_2d": [0,0,0,0], "rating": 1e999, "tool": "final"}'), "invalid_rating"),
        (answer('{"bbox_2d": [0,0,0,0], "rating": true, "tool": "final"}'), "invalid_rating"),
        (answer('{"bbox_2d": [0,0,0,0], "rating": [3], "tool": "final"}'), "invalid_rating"),
        (answer('{"rating": 3, "tool": "final"}'), "invalid_bbox"),
        (answer('{"bbox_2d": [0, 0, 1], "rating": 3, "tool": "crop"}'), "invalid_bbox"),
        (answer('{"bbox_2d": [[0, 0, 1, 1]], "rating": 3, "tool": "crop"}'), "invalid_bbox"),
        (answer('{"bbox_2d": ["a", 0, 1, 1], "rating": 3, "tool": "crop"}'), "invalid_bbox"),
        (answer('{"bbox_2d": [0, 0, 0, 0], "rating": 3}'), "invalid_tool"),
        (answer('{"bbox_2d": [0, 0, 0, 0], "rating": 3, "tool": "zoom"}'), "invalid_tool"),
        (answer('{"bbox_2d": [0, 0, 0, 0], "rating": 3, "tool": 1}'), "invalid_tool"),
    ],
)
def test_each_error_class(text, kind):
    parsed = parse_zoomiqa_answer(text)
    assert parsed.error == kind
    assert set(parsed.errors) <= set(ERROR_KINDS)


def test_all_field_errors_are_reported_in_order():
    parsed = parse_zoomiqa_answer(answer('{"rating": "x", "bbox_2d": 5, "tool": "?"}'))
    assert parsed.errors == ("invalid_rating", "invalid_bbox", "invalid_tool")


def test_field_errors_keep_the_valid_fields():
    parsed = parse_zoomiqa_answer(answer('{"bbox_2d": [1, 2], "rating": 3.5, "tool": " Crop "}'))
    assert parsed.errors == ("invalid_bbox",) and parsed.rating == 3.5 and parsed.tool == "crop"


@pytest.mark.parametrize(
    "payload",
    [
        "{'bbox_2d': [0, 0, 0, 0], 'rating': 3.5, 'tool': 'final'}",
        '{"bbox_2d": [0, 0, 0, 0], "rating": 3.5, "tool": "final",}',
        '{bbox_2d: [0, 0, 0, 0,], rating: 3.5, tool: "final"}',
        "{\u201cbbox_2d\u201d: [0, 0, 0, 0], \u201crating\u201d: 3.5, \u201ctool\u201d: \u201cfinal\u201d}",
        '```json\n{"bbox_2d": [0, 0, 0, 0], "rating": 3.5, "tool": "final",}\n```',
        "{'bbox_2d': (0, 0, 0, 0), 'rating': 3.5, 'tool': 'final', 'note': None}",
    ],
)
def test_lenient_json_fallback(payload):
    parsed = parse_zoomiqa_answer(answer(payload))
    assert parsed.errors == () and parsed.rating == 3.5 and parsed.tool == "final" and parsed.lenient


def test_first_answer_block_is_used():
    assert parse_zoomiqa_answer(answer(FINAL) + answer(CROP)).tool == "final"
    assert answer_block("<answer>a</answer><answer>b</answer>", last=True) == "b"


# ---- routing after stage 1 ----

@pytest.mark.parametrize(
    "payload,action,rating,warning",
    [
        (CROP, "crop", 3.25, None),
        (FINAL, "final", 2.75, None),
        ('{"bbox_2d": [0.1, 0.1, 0.5, 0.5], "rating": "bad", "tool": "crop"}', "crop", None, None),
        ('{"bbox_2d": [1, 2], "rating": 3.5, "tool": "crop"}', "final", 3.5, "invalid_bbox"),
        ('{"bbox_2d": [0.1, 0.1, 0.5, 0.5], "rating": 3.5, "tool": "look"}', "final", 3.5, "invalid_tool"),
        ('{"bbox_2d": [0, 0, 0, 0], "rating": 3.5, "tool": "crop"}', "final", 3.5, "crop_with_zero_box"),
        ('{"rating": 3.5, "tool": "final"}', "final", 3.5, "invalid_bbox"),
        ('{"bbox_2d": [0, 0, 0, 0], "rating": "bad", "tool": "final"}', "invalid", None, None),
        ("not json", "invalid", None, None),
    ],
)
def test_route_stage1(payload, action, rating, warning):
    route = route_stage1(parse_zoomiqa_answer(answer(payload)))
    assert (route.action, route.rating, route.warning) == (action, rating, warning)


def test_missing_answer_routes_to_invalid():
    assert route_stage1(parse_zoomiqa_answer("<think>...</think>")).action == "invalid"


# ---- format reward (Zoom-IQA Eq. 3) ----

def test_format_accepts_one_final_round_and_a_crop_then_final():
    assert check_zoomiqa_format([ROUND1_FINAL])
    assert check_zoomiqa_format([ROUND1_CROP, ROUND2])
    # labels with the qualifiers and bold the published prompts use
    label = "2) Directions for Improvement:"
    decorated = ROUND1_FINAL.replace(label, "**Directions for Improvement (positive)**:")
    assert check_zoomiqa_format([decorated])


@pytest.mark.parametrize(
    "rounds,reason",
    [
        ([], "expected 1 to 2 rounds"),
        ([ROUND1_CROP, ROUND2, ROUND2], "expected 1 to 2 rounds"),
        ([ROUND1_CROP], "last round must be tool 'final'"),
        ([ROUND1_FINAL, ROUND2], "before the last must crop"),
        ([ROUND1_CROP, think(STAGE1_SECTIONS) + answer(FINAL)], "expected non-empty sections"),
        ([think(STAGE1_SECTIONS[:3]) + answer(FINAL)], "expected non-empty sections"),
        ([think(STAGE1_SECTIONS[::-1]) + answer(FINAL)], "expected non-empty sections"),
        ([think(STAGE1_SECTIONS, ["a", "", "c", "d"]) + answer(FINAL)], "expected non-empty sections"),
        (["<think>preamble\n" + ROUND1_FINAL[8:]], "text before the first section"),
        (["Sure! " + ROUND1_FINAL], "expected exactly <think>"),
        ([ROUND1_FINAL + " thanks"], "expected exactly <think>"),
        ([ROUND1_FINAL + answer(FINAL)], "expected exactly <think>"),
        ([ROUND1_FINAL + "</answer>"], "expected exactly <think>"),
        ([think(STAGE1_SECTIONS) + answer(FINAL.replace('"', "'"))], "lenient JSON: True"),
        ([think(STAGE1_SECTIONS) + answer(FINAL.replace("2.75", "5.5"))], "outside [1, 5]"),
        ([think(STAGE1_SECTIONS) + answer(CROP.replace("0.5, 0.6", "50, 60")), ROUND2], "normalized box"),
        ([think(STAGE1_SECTIONS) + answer(CROP.replace("0.1, 0.2, 0.5", "0.5, 0.2, 0.1")), ROUND2], "x1<x2"),
        ([think(STAGE1_SECTIONS) + answer(FINAL.replace("0, 0, 0, 0", "0, 0, 0.5, 0.5"))], "[0, 0, 0, 0]"),
        ([think(STAGE1_SECTIONS) + answer('{"rating": 3}')], "answer errors"),
        ([None], "not a string"),
    ],
)
def test_format_rejects(rounds, reason):
    problems = zoomiqa_format_problems(rounds)
    assert any(reason in p for p in problems), problems
    assert not check_zoomiqa_format(rounds)


def test_format_rejects_a_bare_string():
    assert not check_zoomiqa_format(ROUND1_FINAL)


# ---- sections and restoration prompts ----

def test_sections_and_restoration_prompts():
    text = (
        "<think>Image Quality Summary: Noisy.\nDirections for Improvement: Crisp spokes on the front wheel.\n"
        "Issues to Avoid: Grain over the dark jacket.\nDecision & Rationale: Final.</think>" + answer(FINAL)
    )
    assert [label for label, _ in think_sections(text)] == list(STAGE1_SECTIONS)
    prompts = extract_restoration_prompts(text)
    assert prompts.positive == "Crisp spokes on the front wheel."
    assert prompts.negative == "Grain over the dark jacket."


def test_restoration_prompts_missing_sections_are_none():
    prompts = extract_restoration_prompts("<think>just one paragraph</think>")
    assert prompts.positive is None and prompts.negative is None
    assert extract_restoration_prompts(ROUND2).positive == "body 1 of the Directions for Improvement."


# ---- Q-Insight and VisualQuality-R1 ----

def test_qinsight_format():
    good = '<think>\nIt is sharp.\n</think>\n<answer>\n{"rating": 4.20}\n</answer>'
    assert check_qinsight_format(good)
    assert check_qinsight_format(good.replace("\n</think>", " \n </think>  ") + "\n")
    assert not check_qinsight_format(good.replace("<think>\n", "<think>"))
    assert not check_qinsight_format(good.replace('{"rating": 4.20}', '{"a": {"rating": 4.20}}'))
    assert not check_qinsight_format(good.replace('{"rating": 4.20}', '"rating": 4.20'))
    assert not check_qinsight_format(good + " extra")
    assert not check_qinsight_format(None)


@pytest.mark.parametrize(
    "text, ok",
    [
        ('<think>\nx\n</think>\n\n<answer>\n{"rating": 3}\n</answer>', True),  # a blank line is whitespace
        ('<think>  \nline one\nline two  \n  </think>  \n<answer> \n{"rating": 3}  \n  </answer> \n', True),
        ('<think>x</think><answer>{"rating": 3}</answer>', False),  # no newlines
        ('preamble <think>\nx\n</think>\n<answer>\n{"rating": 3}\n</answer>', False),  # text before
        ('<think>\nx\n</think>\n<answer>\n{"rating": 3}\n</answer>\nextra', False),  # text after
        ('<think>\nx\n</think>\n<answer>\n{"rating": 3}\n{"rating": 4}\n</answer>', False),  # two objects
        ("", False),
    ],
)
def test_qinsight_format_is_the_whole_text(text, ok):
    assert check_qinsight_format(text) is ok


@pytest.mark.parametrize(
    "text,rating,error",
    [
        (answer('{"rating": 3.57}'), 3.57, None),
        (answer('{"rating":4}') + answer('{"rating": 1}'), 4.0, None),
        (answer('{"rating": 7.5}'), 7.5, None),
        (answer('{"rating": "3.5"}'), None, "invalid_rating"),
        (answer('{"rating": 3.5.1}'), None, "invalid_rating"),
        (answer('{"score": 3.5}'), None, "invalid_rating"),
        ('"rating": 3.5', None, "missing_answer"),
        (answer('{"rating": 3.}'), 3.0, None),  # upstream's float("3.") is 3.0
        (answer('{"rating": -1.0}'), None, "invalid_rating"),  # a minus sign does not match
        (answer('{"rating": .}'), None, "invalid_rating"),
        (answer('{"rating": "x", "rating": 2.5}'), 2.5, None),  # the first NUMBER after "rating":
        (answer('{"rating": ' + "9" * 400 + "}"), None, "invalid_rating"),  # overflows to inf
        ('<think>\nx\n</think>\n<answer>\n{"rating": 3.42}\n</answer>', 3.42, None),
    ],
)
def test_qinsight_score(text, rating, error):
    parsed = parse_qinsight_score(text)
    assert (parsed.rating, parsed.error) == (rating, error)
    assert parse_qinsight_score(text, strict=True) == parsed  # strict is the default


@pytest.mark.parametrize(
    "payload,strict,lenient",
    [
        ('{"rating": "3.5"}', None, 3.5),
        ('{"rating": " 4.25 "}', None, 4.25),
        ('{"rating": 2.5}', 2.5, 2.5),
        ('{"rating": "3.5.1"}', None, None),
        ('{"rating": "good"}', None, None),
    ],
)
def test_qinsight_score_quoted_rating_only_when_not_strict(payload, strict, lenient):
    assert parse_qinsight_score(answer(payload)).rating == strict
    assert parse_qinsight_score(answer(payload), strict=False).rating == lenient


@pytest.mark.parametrize(
    "text,expected",
    [
        (answer('{"distortion_class": "noise", "severity": " moderate "}'), ("noise", "moderate", None)),
        (answer('{"distortion_class": "null", "severity": "null"}'), ("null", "null", None)),
        (answer('{"severity": "slight", "distortion_class": "blur"}'), (None, None, "invalid_degradation")),
        (answer('{"distortion_class": null, "severity": null}'), (None, None, "invalid_degradation")),
        (answer('{"distortion_class": "Noise", "severity": " "}'), ("Noise", "", None)),  # case kept, blank is ""
        (answer('{"distortion_class": "", "severity": "slight"}'), (None, None, "invalid_degradation")),
        (answer('{"distortion_class": "blur"}') + answer('{"distortion_class": "noise", "severity": "slight"}'),
         (None, None, "invalid_degradation")),  # only the first block counts
        ("no answer", (None, None, "missing_answer")),
    ],
)
def test_qinsight_degradation(text, expected):
    parsed = parse_qinsight_degradation(text)
    assert (parsed.distortion_class, parsed.severity, parsed.error) == expected


@pytest.mark.parametrize(
    "text,choice,error",
    [
        (answer("Image A"), "A", None),
        (answer(' "image b". '), "B", None),
        (answer("Image B is better than image B's rival"), "B", None),
        (answer("Image A or Image B"), None, "invalid_choice"),
        (answer("the first one"), None, "invalid_choice"),
        ("Image A", None, "missing_answer"),
    ],
)
def test_qinsight_comparison(text, choice, error):
    parsed = parse_qinsight_comparison(text)
    assert (parsed.choice, parsed.error) == (choice, error)


@pytest.mark.parametrize(
    "text,rating,error,tagged",
    [
        ("<think>It is 2 out of 5.</think><answer>3.75</answer>", 3.75, None, True),
        ("<answer>1</answer> more <answer>score: 4.5/5</answer>", 4.5, None, True),
        ("<think>no tags, rating 2.5</think>", 2.5, None, False),
        ("<answer>excellent</answer>", None, "invalid_rating", True),
        ("", None, "invalid_rating", False),
        # Golden cases from upstream's reward (`-?\d+(\.\d+)?` on the stripped last block, float(), no clip):
        ("<answer>-1.5</answer>", -1.5, None, True),  # the minus sign is kept; not clipped, as upstream
        ("<think>x</think><answer> -0.25 </answer>", -0.25, None, True),
        ("<answer>score-4.5</answer>", -4.5, None, True),  # a hyphen before a number reads as its sign
        ("<answer>3-4</answer>", 3.0, None, True),  # the FIRST match only
        ("<answer>--2</answer>", -2.0, None, True),  # one minus sign belongs to the number
        ("<answer>- 2</answer>", 2.0, None, True),  # a minus with a space is not a sign
        ("no tags: -3.25 then 4", -3.25, None, False),  # whole text without a block
        ("<answer>1.5e3</answer>", 1.5, None, True),  # no exponent in the pattern
        ("<answer>-.5</answer>", 5.0, None, True),  # "\d+" needs a digit before the point: "5" matches
        ("<answer>-</answer>", None, "invalid_rating", True),
        ("<answer>" + "9" * 400 + "</answer>", None, "invalid_rating", True),  # float() gives inf: we refuse
    ],
)
def test_visualquality_r1(text, rating, error, tagged):
    parsed = parse_visualquality_r1(text)
    assert (parsed.rating, parsed.error, parsed.from_answer_tag) == (rating, error, tagged)


# ---- never raise ----

PARSERS = [
    parse_zoomiqa_answer, lambda t: route_stage1(parse_zoomiqa_answer(t)),
    lambda t: check_zoomiqa_format([t]), lambda t: check_zoomiqa_format([t, t]), think_sections,
    extract_restoration_prompts, check_qinsight_format, parse_qinsight_score, parse_qinsight_degradation,
    parse_qinsight_comparison, parse_visualquality_r1, lambda t: parse_qinsight_score(t, strict=False),
]
FRAGMENTS = [
    "<answer>", "</answer>", "<think>", "</think>", "{", "}", "[", "]", '"', "'", ",", ":", "\n", " ",
    '"rating"', '"bbox_2d"', '"tool"', '"crop"', '"final"', "3.5", "-1e309", "NaN", "0", "1", "true", "null",
    "Image A", "image b", "Issues to Avoid:", "1) Image Quality Summary:", "Decision & Rationale:", "(", ")",
    '"distortion_class"', '"severity"', "\\", "\u201c", "[[[[", "((((",
]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)))
def test_parsers_never_raise(text):
    for parser in PARSERS:
        parser(text)
    parsed = parse_zoomiqa_answer(text)
    if parsed.rating is not None:
        assert 1.0 <= parsed.rating <= 5.0
    assert set(parsed.errors) <= set(ERROR_KINDS)
    for strict in (True, False):
        score = parse_qinsight_score(text, strict=strict)
        assert (score.rating is None) == (score.error is not None)
        assert score.rating is None or (math.isfinite(score.rating) and score.rating >= 0.0)


def test_parsers_never_raise_on_hostile_inputs():
    hostile = [None, 5, b"<answer>{}</answer>", "<answer>{" + "[" * 5000 + "}</answer>",
               "<answer>{" + "(" * 5000 + "}</answer>", "<answer>{\"rating\": " + "9" * 5000 + "}</answer>",
               "<answer>" * 2000, "<think>" + "Issues to Avoid:\n" * 2000,
               '<answer>{"bbox_2d": [0, 0, 0, 0], "tool": "final", "rating": ' + "9" * 400 + "}</answer>"]
    for text in hostile:
        for parser in PARSERS:
            parser(text)
    assert parse_zoomiqa_answer(hostile[5]).error == "malformed_json"  # over Python's int-digit limit
    assert parse_zoomiqa_answer(hostile[-1]).errors == ("invalid_rating",)  # a finite JSON int, inf as float


def test_malformed_numbers_warn_nothing():
    """Model text like "4.58in" makes `ast.literal_eval` emit SyntaxWarning; the lenient reader keeps it quiet
    (the answer is counted as invalid, not printed during GRPO rollouts)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answer = parse_zoomiqa_answer("<answer>{'rating': 4.58in, 'tool': 'final'}</answer>")
    assert answer.rating is None
    assert not [w for w in caught if issubclass(w.category, SyntaxWarning)], caught
