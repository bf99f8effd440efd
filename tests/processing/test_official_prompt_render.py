"""Issue 18 must-show 2: the official protocol's stage-1 and stage-2 prompts, rendered from an imported prompt
file through the chat template and the tiny tokenizer, checked against strings and token ids written out here.

The prompt file is imported from a fake checkout of the authors' code (their variable names, our short texts
made of words the tiny tokenizer knows, so the ids stay few). The record has its own question with an
`<|image|>` tag: stage 1 gets it removed, the stage-2 history keeps it (evaluate.py:86, protocol.py:217).
"""

from tests.processing.official_fake_checkout import make_checkout
from zoomiqa_jax.processing.official_inputs import draw_questions
from zoomiqa_jax.processing.official_prompts import import_official
from zoomiqa_jax.processing.prompts import load_prompt_file, zoomiqa_stage1_messages, zoomiqa_stage2_messages
from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer, render_chat

SOURCE = '''"""Made-up stand-in for the authors' protocol module."""

RANDOM_QUESTIONS = (
    "How would you judge the quality of this image?",
    "How good is the quality of this image?",
)

STAGE1_PROMPT = """
Rate the image quality: {{"rating": 3.25}}.
Q: {question}
"""

STAGE2_PROMPT = """
Look again: {{"rating": 3.25}}.
Q: {question}
"""
'''
RECORDS = [{"conversations": [{"from": "human", "value": "<|image|>How good is the quality of this image?"}]}, {}]
STAGE1_OUTPUT = (
    '<think>The image is sharp.</think><answer>{"bbox_2d": [0.25, 0.25, 0.75, 0.75], "rating": 3.25, '
    '"tool": "crop"}</answer>'
)
GRID_STAGE1, GRID_ORIGINAL, GRID_CROP = (1, 4, 4), (1, 4, 4), (1, 2, 4)  # 4, 4 and 2 image tokens (merge 2)

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
STAGE1_TEXT = (
    SYSTEM + "<|im_start|>user\n"
    '\nRate the image quality: {"rating": 3.25}.\nQ: How good is the quality of this image?\n'
    "<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n"
)
STAGE2_TEXT = (
    SYSTEM + "<|im_start|>user\n<|image|>How good is the quality of this image?<|im_end|>\n"
    "<|im_start|>assistant\n" + STAGE1_OUTPUT + "<|im_end|>\n"
    '<|im_start|>user\n\nLook again: {{"rating": 3.25}}.\nQ: {question}\n'
    "Original image: <|vision_start|><|image_pad|><|vision_end|>"
    "Cropped Image: <|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n"
)

# Special tokens of the tiny vocabulary: 498 + their index in tokenizer.SPECIAL_TOKENS.
IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD = 499, 500, 507, 508, 510
SYSTEM_IDS = [
    IM_START, 82, 88, 82, 83, 392, 198,  # <|im_start|>system\n
    56, 331, 220, 282, 68, 220, 64, 220, 294, 75, 79, 69, 84, 75, 220, 293, 82, 266, 83, 64, 77, 83, 13,  # You ...
    IM_END, 198,  # <|im_end|>\n
]
USER = [IM_START, 335, 257, 198]  # <|im_start|>user\n
ASSISTANT = [IM_START, 293, 82, 266, 83, 64, 77, 83, 198]  # <|im_start|>assistant\n
QUESTION = [374, 86, 467, 67, 453, 348, 311, 309, 69, 477, 280, 30]  # How good is the quality of this image?
STAGE1_IDS = [
    *SYSTEM_IDS, *USER,
    198, 49, 351, 348, 280, 311, 25, 362, 423, 267, 339, 13, 292, 92, 13, 198,  # \nRate the image quality: {...}.\n
    48, 25, 220, *QUESTION, 198,  # Q: How good is the quality of this image?\n
    VISION_START, *[IMAGE_PAD] * 4, VISION_END, IM_END, 198,
    *ASSISTANT,
]
STAGE2_IDS = [
    *SYSTEM_IDS, *USER,
    27, 91, 277, 91, 29, *QUESTION, IM_END, 198,  # <|image|>How good ...?<|im_end|>\n
    *ASSISTANT,
    27, 367, 29, 379, 280, 453, 486, 79, 13, 27, 14, 367, 29,  # <think>The image is sharp.</think>
    27, 363, 29, 90, 1, 382, 416, 62, 17, 67, 267, 341, 15, 13, 292, 11, 286, 13, 292, 11, 286, 13, 317, 11, 286,
    13, 317, 380, 258, 423, 267, 339, 13, 292, 11, 258, 366, 267, 258, 387, 316,  # <answer>{"bbox_2d": ... "crop"}
    27, 14, 363, 29, IM_END, 198,  # </answer><|im_end|>\n
    *USER,
    198, 43, 300, 74, 220, 64, 70, 64, 265, 25,  # \nLook again:
    310, 90, 1, 423, 267, 339, 13, 292, 92, 92, 13, 198,  #  {{"rating": 3.25}}.\n
    48, 25, 310, 80, 430, 304, 92, 198,  # Q: {question}\n
    375, 284, 313, 280, 25, 220, VISION_START, *[IMAGE_PAD] * 4, VISION_END,  # Original image: <image>
    318, 419, 288, 273, 25, 220, VISION_START, *[IMAGE_PAD] * 2, VISION_END,  # Cropped Image: <crop>
    IM_END, 198, *ASSISTANT,
]


def test_official_prompts_render_to_the_expected_strings_and_token_ids(tmp_path):
    prompts = load_prompt_file(import_official(make_checkout(tmp_path / "c", SOURCE), tmp_path / "official.yaml"))
    own, drawn = draw_questions(RECORDS, prompts.zoomiqa_questions)
    assert drawn.stage1 == "How would you judge the quality of this image?"  # Random(42).choice: index 0
    assert (own.stage1, own.history) == ("How good is the quality of this image?",
                                         "<|image|>How good is the quality of this image?")
    tokenizer = load_tokenizer(TINY_TOKENIZER_DIR)

    stage1 = zoomiqa_stage1_messages(own.stage1, prompts)
    assert tokenizer.apply_chat_template(stage1, tokenize=False, add_generation_prompt=True) == STAGE1_TEXT
    assert render_chat(tokenizer, stage1, [GRID_STAGE1]) == STAGE1_IDS

    stage2 = zoomiqa_stage2_messages(own.history, STAGE1_OUTPUT, prompts)
    assert tokenizer.apply_chat_template(stage2, tokenize=False, add_generation_prompt=True) == STAGE2_TEXT
    assert render_chat(tokenizer, stage2, [GRID_ORIGINAL, GRID_CROP]) == STAGE2_IDS
