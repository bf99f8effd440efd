"""inference.tasks.run_task: the one entry point score, eval and GRPO call; "zoomiqa" gives run_zoomiqa's
trajectories (both rounds, the protocol's), any other task run_single_turn's, with the same samplers."""

from types import SimpleNamespace

import pytest

from tests.inference.replies import CROP, FINAL, STAGE2
from tests.inference.test_zoom import CFG, SETTINGS, Scripted, items
from zoomiqa_jax.config import PROMPT_TASKS
from zoomiqa_jax.inference.protocol import Protocol
from zoomiqa_jax.inference.single_turn import SINGLE_IMAGE_TASKS, run_single_turn
from zoomiqa_jax.inference.tasks import run_task
from zoomiqa_jax.inference.zoom import run_zoomiqa
from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_TOKENIZER_DIR)


STUB = SimpleNamespace(config=CFG)


@pytest.mark.parametrize("protocol", [None, "official", "strict"])
def test_zoomiqa_is_run_zoomiqa(tok, protocol):
    proto = None if protocol is None else Protocol(protocol)

    def run(fn, *args, **kw):  # two scripted rounds: image 0 crops, image 1 answers at once
        return fn(STUB, tok, items(2), *args, SETTINGS, stage1_generate_fn=Scripted(tok, [CROP, FINAL]),
                  generate_fn=Scripted(tok, [STAGE2]), protocol=proto, **kw)

    got = run(lambda *a, **kw: run_task(a[0], a[1], a[2], "zoomiqa", *a[3:], **kw))
    want = run(run_zoomiqa)
    assert [len(t.rounds) for t in got] == [2, 1]
    assert [t.to_dict() for t in got] == [t.to_dict() for t in want]


@pytest.mark.parametrize("task", sorted(set(PROMPT_TASKS.values()) - {"zoomiqa"}))
def test_single_turn_tasks_are_run_single_turn(tok, task):
    assert task in SINGLE_IMAGE_TASKS
    answer = ['<think>ok</think><answer>{"rating": 3.40}</answer>']
    got = run_task(STUB, tok, items(1), task, SETTINGS, generate_fn=Scripted(tok, answer))
    want = run_single_turn(STUB, tok, items(1), task, SETTINGS, generate_fn=Scripted(tok, answer))
    assert [t.to_dict() for t in got] == [t.to_dict() for t in want]
    # GRPO hands its group sampler as the first round's: a single-turn task samples with it
    grouped = Scripted(tok, answer)
    run_task(STUB, tok, items(1), task, SETTINGS, stage1_generate_fn=grouped)
    assert grouped.calls == [1]
