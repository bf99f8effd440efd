"""`zoomiqa prompts import-official`: the authors' texts from a checkout into a --prompt-file (issue 18 item 1).

The checkout is a fake one (tests/processing/official_fake_checkout.py): their layout and variable names, our
made-up texts.
"""

import json

import pytest
import yaml

from tests.processing.official_fake_checkout import (
    FAKE_QUESTIONS,
    FAKE_STAGE1_SOURCE,
    FAKE_STAGE1_TEMPLATE,
    FAKE_STAGE2_SOURCE,
    PROTOCOL_SOURCE,
    make_checkout,
)
from zoomiqa_jax import cli
from zoomiqa_jax.processing.official_prompts import (
    OfficialPromptsError,
    import_official,
    main,
    read_official_texts,
    stage1_template,
)
from zoomiqa_jax.processing.prompts import load_prompt_file, zoomiqa_stage1_messages, zoomiqa_stage2_messages


def test_reads_the_three_constants_without_running_the_module(tmp_path):
    texts = read_official_texts(make_checkout(tmp_path))  # the module raises and imports a missing package
    assert texts.stage1 == FAKE_STAGE1_SOURCE
    assert texts.stage2 == FAKE_STAGE2_SOURCE
    assert texts.questions == FAKE_QUESTIONS
    assert texts.source == tmp_path / "src" / "zoomiqa" / "inference" / "protocol.py"


@pytest.mark.parametrize("name", ["out.yaml", "out.yml", "out.json"])
def test_written_file_loads_as_a_prompt_file_with_the_official_texts(tmp_path, name):
    out = import_official(make_checkout(tmp_path / "checkout"), tmp_path / name)
    prompts = load_prompt_file(out)
    assert prompts.zoomiqa_stage1 == FAKE_STAGE1_TEMPLATE  # braces undone, {question} kept
    assert prompts.zoomiqa_stage2 == FAKE_STAGE2_SOURCE  # verbatim: doubled braces, {question}, tab, trailing space
    assert prompts.zoomiqa_questions == FAKE_QUESTIONS  # same order
    assert prompts.zoomiqa_original_label == "Original image: "
    assert prompts.zoomiqa_crop_label == "Cropped Image: "
    raw = json.loads(out.read_text()) if name.endswith(".json") else yaml.safe_load(out.read_text())
    assert list(raw) == ["zoomiqa_stage1", "zoomiqa_stage2", "zoomiqa_questions", "zoomiqa_original_label",
                         "zoomiqa_crop_label"]
    if not name.endswith(".json"):
        assert out.read_text().startswith("# The Zoom-IQA authors' prompt texts")


@pytest.mark.parametrize("question", ["Is this photo sharp?", 'Odd {braces} and "{question}"', ""])
def test_stage1_turn_equals_their_str_format(tmp_path, question):
    prompts = load_prompt_file(import_official(make_checkout(tmp_path / "c"), tmp_path / "p.yaml"))
    [turn] = zoomiqa_stage1_messages(question, prompts)
    assert turn["content"] == [{"type": "text", "text": FAKE_STAGE1_SOURCE.format(question=question)},
                               {"type": "image"}]
    stage2 = zoomiqa_stage2_messages(question, "<answer>{}</answer>", prompts)
    assert stage2[2]["content"][0]["text"] == FAKE_STAGE2_SOURCE  # not formatted


def test_stage1_template_rules():
    assert stage1_template('A {{"k": 1}} {question} }}') == 'A {"k": 1} {question} }'
    for bad, needle in (("no field", "exactly once"), ("{question} {question}", "exactly once"),
                        ("{question} {rating}", "{rating}"), ("{question!r}", "{question!r}"),
                        ("{question:>9}", "{question:>9}"), ("{question} {", "not a valid str.format"),
                        ("{{question}} {question}", "2 '{question}'")):
        with pytest.raises(OfficialPromptsError) as err:
            stage1_template(bad, "X.py: STAGE1_PROMPT")
        assert needle in str(err.value) and "X.py: STAGE1_PROMPT" in str(err.value)


def _run(capsys, *argv):
    code = main(["import-official", *map(str, argv)])
    return code, capsys.readouterr()


def test_cli_writes_the_file_and_refuses_to_overwrite_without_force(tmp_path, capsys):
    checkout, out = make_checkout(tmp_path / "c"), tmp_path / "official.yaml"
    code, io = _run(capsys, checkout, out)
    assert code == 0 and f"--prompt-file {out}" in io.out
    first = out.read_text()
    code, io = _run(capsys, checkout, out)
    assert code == 2 and f"{out}: already exists (pass --force" in io.err
    code, io = _run(capsys, checkout, out, "--force")
    assert code == 0 and out.read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "official.yaml"]  # no temporary file left


def test_the_zoomiqa_entry_point_routes_prompts(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert cli.main(["prompts", "import-official", str(make_checkout(tmp_path / "c")), str(out)]) == 0
    assert load_prompt_file(out).zoomiqa_questions == FAKE_QUESTIONS
    assert cli.main(["--help"]) == 0
    assert "prompts" in capsys.readouterr().out


@pytest.mark.parametrize("edit,needle", [
    (lambda s: s.replace("STAGE2_PROMPT =", "OTHER_PROMPT ="), "no module-level assignment of STAGE2_PROMPT"),
    (lambda s: s.replace("RANDOM_QUESTIONS =", "QUESTIONS ="), "no module-level assignment of RANDOM_QUESTIONS"),
    (lambda s: s.replace('STAGE1_PROMPT = """', 'STAGE1_PROMPT = "".join("""').replace(
        '"""\n\nSTAGE2', '""")\n\nSTAGE2'), "STAGE1_PROMPT (line"),
    (lambda s: s.replace("RANDOM_QUESTIONS = (", "RANDOM_QUESTIONS = 3 and ("), "RANDOM_QUESTIONS (line"),
    (lambda s: s + "\nRANDOM_QUESTIONS = ()\n", "RANDOM_QUESTIONS: expected a non-empty tuple"),
    (lambda s: s + "\nRANDOM_QUESTIONS = ('ok', '  ')\n", "RANDOM_QUESTIONS: expected non-blank strings"),
    (lambda s: s + "\nSTAGE2_PROMPT = 7\n", "STAGE2_PROMPT: expected a non-empty string, found int"),
    (lambda s: s.replace("ASKED: {question}\n\"\"\"\n\nSTAGE2", "ASKED\n\"\"\"\n\nSTAGE2"), "exactly once"),
    (lambda s: s + "\ndef broken(:\n", "not valid Python (line"),
])
def test_cli_names_the_file_and_the_constant_when_the_checkout_lacks_a_text(tmp_path, capsys, edit, needle):
    checkout = make_checkout(tmp_path / "c", edit(PROTOCOL_SOURCE))
    out = tmp_path / "p.yaml"
    code, io = _run(capsys, checkout, out)
    assert code == 2, io
    assert "protocol.py" in io.err and needle in io.err, io.err
    assert not out.exists()


def test_cli_errors_for_paths(tmp_path, capsys):
    code, io = _run(capsys, tmp_path / "nowhere", tmp_path / "p.yaml")
    assert code == 2 and f"{tmp_path / 'nowhere'}: no such directory" in io.err
    (tmp_path / "empty").mkdir()
    code, io = _run(capsys, tmp_path / "empty", tmp_path / "p.yaml")
    assert code == 2 and "src/zoomiqa/inference/protocol.py: no such file" in io.err
    checkout = make_checkout(tmp_path / "c")
    code, io = _run(capsys, checkout, tmp_path / "p.txt")
    assert code == 2 and "expected a .yaml, .yml or .json prompt file" in io.err
    code, io = _run(capsys, checkout, tmp_path / "missing" / "p.yaml")
    assert code == 2 and "does not exist" in io.err
    # the protocol file itself may be given
    code, _ = _run(capsys, checkout / "src" / "zoomiqa" / "inference" / "protocol.py", tmp_path / "p.yaml")
    assert code == 0


def test_prompts_help_imports_no_heavy_library():
    from tests.test_cli_startup import _probe

    for argv in (["prompts", "--help"], ["prompts", "import-official", "--help"]):
        last, output = _probe("zoomiqa_jax.cli", argv)
        assert last == "RC 0 HEAVY []", last
        assert "import-official" in output
