"""The authors' Zoom-IQA prompt texts, read from the user's own checkout into a `--prompt-file` (issue 18 item 1).

`zoomiqa prompts import-official CHECKOUT OUT.yaml` reads three constants from the authors' released code
(GitHub EthanLiang99/Zoom-IQA; line numbers below are of commit f4dee23) and writes a prompt file that
`zoomiqa score --prompt-file`, `zoomiqa eval --prompt-file` and `data.prompt_file` accept
(`processing.prompts.load_prompt_file`). Their wording never enters this repository: the file is made on the
user's machine, from the user's checkout. The source is parsed with `ast` and each value read with
`ast.literal_eval`; nothing of the checkout is imported or executed.

What each constant becomes (`src/zoomiqa/inference/protocol.py`):

* `STAGE1_PROMPT` (protocol.py:40-84) is a `str.format` template: their stage-1 turn is
  `STAGE1_PROMPT.format(question=question)` (protocol.py:207), so a doubled brace reaches the model as one
  brace. `zoomiqa_stage1` is that text with the braces undone and `{question}` kept as the placeholder, which
  `prompts.zoomiqa_stage1_messages` fills by plain replacement: the rendered turn is the same string.
* `STAGE2_PROMPT` (protocol.py:86-113) is sent as written (protocol.py:222), its literal `{question}` and
  doubled braces included: `zoomiqa_stage2` holds it verbatim (the loader sends that field verbatim).
* `RANDOM_QUESTIONS` (protocol.py:32-38), the paraphrase pool, becomes `zoomiqa_questions` in the same order
  (their draw, evaluate.py:87, picks by position: see `official_inputs.draw_questions`).
* The stage-2 labels are not constants there (literals at protocol.py:223 and :225); the file takes them from
  `official.OFFICIAL_ORIGINAL_LABEL` / `OFFICIAL_CROP_LABEL`, so that the file alone gives the official texts.
"""

from __future__ import annotations

import argparse
import ast
import os
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOCOL_FILE = Path("src/zoomiqa/inference/protocol.py")
STAGE1_CONSTANT = "STAGE1_PROMPT"
STAGE2_CONSTANT = "STAGE2_PROMPT"
QUESTIONS_CONSTANT = "RANDOM_QUESTIONS"
PROMPT_SUFFIXES = (".yaml", ".yml", ".json")


class OfficialPromptsError(ValueError):
    """The checkout lacks a text the official protocol needs, or the output cannot be written."""


@dataclass(frozen=True)
class OfficialTexts:
    """The authors' texts as their source holds them (`stage1` still a `str.format` template)."""

    stage1: str
    stage2: str
    questions: tuple[str, ...]
    source: Path


def find_protocol_file(checkout: str | os.PathLike[str]) -> Path:
    """`src/zoomiqa/inference/protocol.py` under `checkout`; `checkout` may also be that file itself.

    Raises OfficialPromptsError naming the path that is missing.
    """
    root = Path(checkout)
    if root.is_file():
        return root
    if not root.is_dir():
        raise OfficialPromptsError(f"{root}: no such directory (expected a checkout of the authors' Zoom-IQA code)")
    path = root / PROTOCOL_FILE
    if not path.is_file():
        raise OfficialPromptsError(
            f"{path}: no such file; expected the authors' prompt texts in {PROTOCOL_FILE} of the checkout {root}"
        )
    return path


def read_official_texts(checkout: str | os.PathLike[str]) -> OfficialTexts:
    """Read `STAGE1_PROMPT`, `STAGE2_PROMPT` and `RANDOM_QUESTIONS` from the checkout's protocol.py with `ast`.

    Each must be a module-level assignment of a literal (the last one wins, as when the module runs): the
    prompts non-empty strings, the pool a non-empty list or tuple of non-blank strings. Raises
    OfficialPromptsError naming the file, and the constant where one is missing or not such a literal.
    """
    path = find_protocol_file(checkout)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise OfficialPromptsError(f"{path}: cannot read it: {err}") from err
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as err:
        raise OfficialPromptsError(f"{path}: not valid Python (line {err.lineno}): {err.msg}") from err
    values = _module_literals(tree, path, (STAGE1_CONSTANT, STAGE2_CONSTANT, QUESTIONS_CONSTANT))
    stage1, stage2, questions = values[STAGE1_CONSTANT], values[STAGE2_CONSTANT], values[QUESTIONS_CONSTANT]
    for name, text in ((STAGE1_CONSTANT, stage1), (STAGE2_CONSTANT, stage2)):
        if not isinstance(text, str) or not text.strip():
            raise OfficialPromptsError(f"{path}: {name}: expected a non-empty string, found {type(text).__name__}")
    if not isinstance(questions, (list, tuple)) or not questions:
        raise OfficialPromptsError(
            f"{path}: {QUESTIONS_CONSTANT}: expected a non-empty tuple of strings, found {type(questions).__name__}"
        )
    bad = [q for q in questions if not isinstance(q, str) or not q.strip()]
    if bad:
        raise OfficialPromptsError(f"{path}: {QUESTIONS_CONSTANT}: expected non-blank strings, found {bad[0]!r}")
    return OfficialTexts(stage1, stage2, tuple(questions), path)


def stage1_template(template: str, where: str = STAGE1_CONSTANT) -> str:
    """A `str.format` template with one field `{question}` in the prompt-file form: braces undone, field kept.

    `template.format(question=q) == stage1_template(template).replace("{question}", q)` for every `q`. The
    field must appear exactly once, without conversion or format spec (the loader's rule); any other field,
    or an unmatched brace, raises OfficialPromptsError naming `where`.
    """
    parts: list[str] = []
    fields = 0
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as err:
        raise OfficialPromptsError(f"{where}: not a valid str.format template: {err}") from err
    for literal, field, spec, conversion in pieces:
        parts.append(literal)
        if field is None:
            continue
        if field != "question" or spec or conversion:
            shown = "{" + field + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            raise OfficialPromptsError(f"{where}: expected only the field {{question}}, found {shown}")
        parts.append("{question}")
        fields += 1
    text = "".join(parts)
    if fields != 1 or text.count("{question}") != 1:
        raise OfficialPromptsError(
            f"{where}: expected the field {{question}} exactly once, found {fields} field(s) and "
            f"{text.count('{question}')} '{{question}}' in the rendered text"
        )
    return text


def official_prompt_entries(texts: OfficialTexts) -> dict[str, Any]:
    """The prompt-file mapping (PromptSet field -> value) for the official protocol, in file order."""
    from zoomiqa_jax.processing.official import OFFICIAL_CROP_LABEL, OFFICIAL_ORIGINAL_LABEL

    return {
        "zoomiqa_stage1": stage1_template(texts.stage1, f"{texts.source}: {STAGE1_CONSTANT}"),
        "zoomiqa_stage2": texts.stage2,
        "zoomiqa_questions": list(texts.questions),
        "zoomiqa_original_label": OFFICIAL_ORIGINAL_LABEL,
        "zoomiqa_crop_label": OFFICIAL_CROP_LABEL,
    }


def import_official(
    checkout: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Write the official prompt file `out` (.yaml, .yml or .json) from the checkout; return its path.

    The file is read back with `load_prompt_file` and compared field by field before it replaces `out`.
    Raises OfficialPromptsError for a missing text (see `read_official_texts`), an unsupported suffix, a
    missing output folder, or an existing `out` without `force`.
    """
    out = Path(out)
    if out.suffix.lower() not in PROMPT_SUFFIXES:
        raise OfficialPromptsError(f"{out}: expected a .yaml, .yml or .json prompt file, found '{out.suffix}'")
    if not out.parent.is_dir():
        raise OfficialPromptsError(f"{out}: the folder {out.parent} does not exist")
    if out.exists() and not force:
        raise OfficialPromptsError(f"{out}: already exists (pass --force to replace it)")
    texts = read_official_texts(checkout)
    entries = official_prompt_entries(texts)
    text = _render(entries, texts.source, out.suffix.lower())
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")  # the loader reads the format from the suffix
    try:
        tmp.write_text(text, encoding="utf-8")
        _check_round_trip(tmp, entries)
        os.replace(tmp, out)
    except OSError as err:
        raise OfficialPromptsError(f"{out}: cannot write it: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """`zoomiqa prompts import-official CHECKOUT OUT [--force]`; exit 0, or 2 with the reason on stderr."""
    parser = argparse.ArgumentParser(
        prog="zoomiqa prompts",
        description="Prompt files for --prompt-file / data.prompt_file.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = commands.add_parser(
        "import-official",
        help="write a prompt file with the Zoom-IQA authors' texts, read from your checkout of their code",
        description=(
            "Read STAGE1_PROMPT, STAGE2_PROMPT and RANDOM_QUESTIONS from src/zoomiqa/inference/protocol.py "
            "of CHECKOUT (parsed, never run) and write them as a prompt file, with the stage-2 labels of the "
            "authors' evaluation."
        ),
    )
    sub.add_argument("checkout", metavar="CHECKOUT", help="your checkout of the authors' Zoom-IQA repository")
    sub.add_argument("out", metavar="OUT", help="prompt file to write (.yaml, .yml or .json)")
    sub.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        path = import_official(args.checkout, args.out, force=args.force)
    except OfficialPromptsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}; use it with --prompt-file {path} or data.prompt_file={path}")
    return 0


def _module_literals(tree: ast.Module, path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """The literal value of the last module-level assignment of each name; errors name the file and constant."""
    nodes: dict[str, ast.expr] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names:
                nodes[target.id] = value
    values: dict[str, Any] = {}
    for name in names:
        if name not in nodes:
            raise OfficialPromptsError(f"{path}: no module-level assignment of {name}")
        try:
            values[name] = ast.literal_eval(nodes[name])
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
            raise OfficialPromptsError(
                f"{path}: {name} (line {nodes[name].lineno}): expected a literal, found an expression "
                f"({type(err).__name__})"
            ) from err
    return values


def _render(entries: dict[str, Any], source: Path, suffix: str) -> str:
    if suffix == ".json":
        import json

        return json.dumps(entries, ensure_ascii=False, indent=2) + "\n"
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        # Block style for multi-line texts where YAML allows it (PyYAML falls back to quoting otherwise).
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)

    _Dumper.add_representer(str, _text)
    shown = str(source).replace("\n", " ")
    header = (
        "# The Zoom-IQA authors' prompt texts, written by `zoomiqa prompts import-official` from\n"
        f"#   {shown}\n"
        "# zoomiqa_stage1: STAGE1_PROMPT with str.format's doubled braces undone; {question} is the placeholder.\n"
        "# zoomiqa_stage2: STAGE2_PROMPT verbatim (its {question} and doubled braces are sent as written).\n"
        "# zoomiqa_questions: RANDOM_QUESTIONS in their order (the seeded draw picks by position).\n"
    )
    body = yaml.dump(entries, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=1 << 16)
    return header + body


def _check_round_trip(path: Path, entries: dict[str, Any]) -> None:
    """Load the written file as `--prompt-file` does and compare every field with what was meant."""
    from zoomiqa_jax.processing.prompts import PromptFileError, load_prompt_file

    try:
        loaded = load_prompt_file(path)
    except PromptFileError as err:
        raise OfficialPromptsError(f"the written prompt file does not load: {err}") from err
    for key, value in entries.items():
        got = getattr(loaded, key)
        if (list(got) if isinstance(value, list) else got) != value:
            raise OfficialPromptsError(f"the written prompt file reads back {key!r} differently: {got!r:.80}")
