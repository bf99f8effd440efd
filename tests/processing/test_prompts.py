"""Prompt texts, chat messages and the --prompt-file format (issue 3)."""

import json
import random

import pytest

from zoomiqa_jax.processing.answers import STAGE1_SECTIONS, STAGE2_SECTIONS, parse_zoomiqa_answer
from zoomiqa_jax.processing.prompts import (
    DEFAULT_PROMPTS,
    ZOOMIQA_QUESTIONS,
    PromptFileError,
    choose_question,
    load_prompt_file,
    qinsight_compare_messages,
    qinsight_degradation_messages,
    qinsight_score_messages,
    visualquality_r1_messages,
    zoomiqa_stage1_messages,
    zoomiqa_stage2_messages,
)

IMAGE = {"type": "image"}


def texts(content):
    return [part["text"] for part in content if part["type"] == "text"]


# ---- Zoom-IQA ----

def test_stage1_is_one_user_turn_question_and_instructions_then_image():
    messages = zoomiqa_stage1_messages("Is this photo sharp?")
    assert [m["role"] for m in messages] == ["user"]
    content = messages[0]["content"]
    assert content[-1] == IMAGE and content.count(IMAGE) == 1
    text = content[0]["text"]
    assert text.startswith("Is this photo sharp?") and "{question}" not in text


def test_stage1_instructions_name_the_protocol():
    text = DEFAULT_PROMPTS.zoomiqa_stage1
    for number, label in enumerate(STAGE1_SECTIONS, start=1):
        assert f"{number}) {label}:" in text  # the same labels the format reward checks
    for needle in ('"bbox_2d"', '"rating"', '"tool"', '"crop"', '"final"', "[0, 0, 0, 0]", "two decimals",
                   "width and height are both 1.0", "<think>", "<answer>"):
        assert needle in text


def test_stage2_history_and_turn_order():
    stage1 = "<think>Image Quality Summary: soft.</think><answer>{...}</answer>"
    question = "How would you judge the quality of this image?"
    messages = zoomiqa_stage2_messages(question, stage1)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == [{"type": "text", "text": question}]  # no image in the history
    assert messages[1]["content"] == [{"type": "text", "text": stage1}]
    last = messages[2]["content"]
    assert [part["type"] for part in last] == ["text", "text", "image", "text", "image"]
    assert last[0]["text"] == DEFAULT_PROMPTS.zoomiqa_stage2
    assert last[1]["text"] == "Original image: " and last[3]["text"] == "Cropped image: "


def test_stage2_instructions_name_the_protocol():
    text = DEFAULT_PROMPTS.zoomiqa_stage2
    for number, label in enumerate(STAGE2_SECTIONS, start=1):
        assert f"{number}) {label}:" in text
    example = next(line for line in text.splitlines() if line.startswith("{"))
    parsed = parse_zoomiqa_answer(f"<answer>{example}</answer>")
    assert parsed.tool == "final" and parsed.bbox == (0, 0, 0, 0) and not parsed.errors


def test_question_is_seeded_or_taken_from_the_record():
    assert choose_question(7) == random.Random(7).choice(ZOOMIQA_QUESTIONS)
    assert choose_question(7) == choose_question(7)
    assert {choose_question(seed) for seed in range(200)} == set(ZOOMIQA_QUESTIONS)
    rng, reference = random.Random(3), random.Random(3)
    assert [choose_question(rng) for _ in range(5)] == [reference.choice(ZOOMIQA_QUESTIONS) for _ in range(5)]
    assert choose_question(7, record_question="Rate it") == "Rate it"
    assert ZOOMIQA_QUESTIONS[0] == "How would you judge the quality of this image?"
    with pytest.raises(ValueError, match="non-blank"):
        choose_question(7, record_question="  ")


# ---- Q-Insight and VisualQuality-R1 ----

def test_qinsight_prompts_quote_table_1():
    system, user = qinsight_score_messages()
    assert system["role"] == "system" and user["role"] == "user"
    assert system["content"][0]["text"].startswith(
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
        "The assistant first thinks about the reasoning process in the mind and then provides the user with "
        "the answer. The reasoning process and answer are enclosed within <think>"
    )
    assert user["content"][0] == IMAGE
    assert texts(user["content"]) == [
        "What is your overall rating on the quality of this picture? The rating should be a float between 1 "
        "and 5, rounded to two decimal places, with 1 representing very poor quality and 5 representing "
        "excellent quality. Return the final answer in JSON format with the following keys: "
        '"rating": The score.'
    ]
    degradation = texts(qinsight_degradation_messages()[1]["content"])[0]
    assert degradation.startswith('Analyze the given image and determine if it contains any of the following')
    assert degradation.endswith('"severity": The severity level (or "null" if none).')


def test_qinsight_compare_places_images_in_the_text():
    content = qinsight_compare_messages(with_reference=True)[1]["content"]
    assert [p["type"] for p in content] == ["text", "image", "text", "image", "text", "image", "text"]
    assert texts(content)[:3] == ["Given reference low-quality image: ", ", Image A: ", " and Image B: "]
    assert texts(content)[-1].endswith('Your answer should be "Image A" or "Image B".')
    noref = qinsight_compare_messages(with_reference=False)[1]["content"]
    assert noref.count(IMAGE) == 2 and "reference" not in "".join(texts(noref))


def test_visualquality_r1_prompt():
    messages = visualquality_r1_messages()
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"][0] == IMAGE
    text = messages[0]["content"][1]["text"]
    assert text.startswith("You are doing the image quality assessment task. Here is the question: ")
    assert text.endswith("output the final answer with only one score in <answer> </answer> tags.")


# ---- prompt file ----

def test_yaml_prompt_file_overrides_by_name(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text(
        "zoomiqa_stage1: |-\n  Q: {question}\n  Answer in JSON {\"rating\": 1.00} not {{}}.\n"
        "zoomiqa_stage2: 'Verbatim {question} and {{\"bbox_2d\": [0, 0, 0, 0]}}'\n"
        "zoomiqa_crop_label: 'Cropped Image: '\n"
        "zoomiqa_questions: [Rate this image.]\n",
        encoding="utf-8",
    )
    prompts = load_prompt_file(path)
    stage1 = zoomiqa_stage1_messages("Why?", prompts)[0]["content"][0]["text"]
    assert stage1 == 'Q: Why?\nAnswer in JSON {"rating": 1.00} not {{}}.'  # literal, no brace escaping
    stage2 = zoomiqa_stage2_messages("Why?", "out", prompts)[2]["content"]
    assert stage2[0]["text"] == 'Verbatim {question} and {{"bbox_2d": [0, 0, 0, 0]}}'
    assert stage2[3]["text"] == "Cropped Image: "
    assert prompts.zoomiqa_questions == ("Rate this image.",)
    assert prompts.qinsight_score == DEFAULT_PROMPTS.qinsight_score  # names left out keep the defaults


def test_json_prompt_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"qinsight_compare_noref": "A=<image_A> B=<image_B>?"}), encoding="utf-8")
    content = qinsight_compare_messages(False, load_prompt_file(path))[1]["content"]
    assert content == [{"type": "text", "text": "A="}, IMAGE, {"type": "text", "text": " B="}, IMAGE,
                       {"type": "text", "text": "?"}]


@pytest.mark.parametrize(
    "name,body,match",
    [
        ("p.yaml", "zoomiqa_stage9: hi\n", r"p\.yaml: unknown prompt name 'zoomiqa_stage9'"),
        ("p.yaml", "zoomiqa_stage2: 3\n", r"p\.yaml, key 'zoomiqa_stage2': expected a non-empty .*found int"),
        ("p.yaml", "zoomiqa_stage2: ''\n", r"key 'zoomiqa_stage2': expected a non-empty string"),
        ("p.yaml", "zoomiqa_stage1: hi\n", r"key 'zoomiqa_stage1'.*\{question\} exactly once, found 0"),
        ("p.yaml", "zoomiqa_questions: []\n", r"key 'zoomiqa_questions': expected a non-empty list"),
        ("p.yaml", "zoomiqa_questions: [ok, '']\n", r"key 'zoomiqa_questions': expected non-empty strings"),
        ("p.yaml", "qinsight_compare: '<image_A> <ref_image> <image_B>'\n", r"key 'qinsight_compare'.*order"),
        ("p.yaml", "- a list\n", r"p\.yaml: expected a mapping.*found list"),
        ("p.yaml", "", r"p\.yaml: expected a mapping.*found NoneType"),
        ("p.yaml", "zoomiqa_stage2: [unclosed\n", r"p\.yaml: not valid YAML"),
        ("p.json", "{'single': 1}", r"p\.json: not valid JSON"),
        ("p.txt", "x", r"p\.txt: expected a \.yaml, \.yml or \.json file"),
    ],
)
def test_prompt_file_errors_name_file_and_key(tmp_path, name, body, match):
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    with pytest.raises(PromptFileError, match=match):
        load_prompt_file(path)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(PromptFileError, match=r"nope\.yaml: cannot read it"):
        load_prompt_file(tmp_path / "nope.yaml")
