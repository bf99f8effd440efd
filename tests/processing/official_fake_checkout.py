"""A fake checkout of the authors' Zoom-IQA code for tests: their file layout and variable names, made-up texts.

The constants sit where theirs do (`src/zoomiqa/inference/protocol.py`) with the same structure (a tuple of
paraphrases; two triple-quoted `str.format` templates that open and close with a newline, hold doubled braces
and one `{question}`), but every word is ours. The module raises at import and imports a package that does
not exist, so a test passes only if the importer never runs it.
"""

from __future__ import annotations

from pathlib import Path

FAKE_QUESTIONS = ("Is this photo sharp?", "Does the picture look noisy?", "How clean is this shot?")

# The text of the stage-1 template as the source holds it (a str.format template).
FAKE_STAGE1_SOURCE = (
    "\n"
    "Grade the picture \u2013 from 1.00 to 5.00 \u2013 and say if a zoom would help.\n"
    "\n"
    "REPLY: <think>why</think><answer>json</answer>\n"
    'KEYS: {{"bbox_2d": [x1, y1, x2, y2], "rating": <r>, "tool": "crop"|"final"}}\n'
    "# not a comment, --- not a document marker\n"
    "\n"
    "ASKED: {question}\n"
)
# What their `.format(question=...)` leaves around the question: the braces undone.
FAKE_STAGE1_TEMPLATE = (
    "\n"
    "Grade the picture \u2013 from 1.00 to 5.00 \u2013 and say if a zoom would help.\n"
    "\n"
    "REPLY: <think>why</think><answer>json</answer>\n"
    'KEYS: {"bbox_2d": [x1, y1, x2, y2], "rating": <r>, "tool": "crop"|"final"}\n'
    "# not a comment, --- not a document marker\n"
    "\n"
    "ASKED: {question}\n"
)
# Sent verbatim: doubled braces, a literal {question}, a line with a trailing space and a tab.
FAKE_STAGE2_SOURCE = (
    "\n"
    "Look at the whole picture and the zoom once more. \n"
    "\tKEYS: {{\"rating\": <r>, \"tool\": \"final\"}}\n"
    "\n"
    "ASKED: {question}\n"
)

_STAGE2_IN_SOURCE = FAKE_STAGE2_SOURCE.replace("\t", "\\t")  # the tab written as an escape in the source

PROTOCOL_SOURCE = f'''"""Made-up stand-in for the authors' protocol module."""

from __future__ import annotations

import a_package_that_does_not_exist  # never imported by the importer

raise RuntimeError("this module must never run")

MAX_ROUNDS = 2

RANDOM_QUESTIONS = (
    {FAKE_QUESTIONS[0]!r},
    {FAKE_QUESTIONS[1]!r},
    {FAKE_QUESTIONS[2]!r},
)

STAGE1_PROMPT = """{FAKE_STAGE1_SOURCE}"""

STAGE2_PROMPT = """{_STAGE2_IN_SOURCE}"""


def build_stage1_message(question, image_path):
    return [{{"role": "user", "content": [
        {{"type": "text", "text": STAGE1_PROMPT.format(question=question)}},
        {{"type": "image", "image": f"file://{{image_path}}"}},
    ]}}]
'''


def make_checkout(root: Path, source: str = PROTOCOL_SOURCE) -> Path:
    """Write the fake checkout under `root` and return `root`."""
    path = root / "src" / "zoomiqa" / "inference" / "protocol.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return root
