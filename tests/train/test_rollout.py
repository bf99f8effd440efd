"""Rollout batches for GRPO (`zoomiqa_jax.train.rollout`): rating tokens of a reply, the batch of crop and no-crop
trajectories (masks, candidates, images re-rendered from the original, the model forward, log-probs that reproduce
the sampling context), refusals, group-shared stage-1 sampling, rollout metrics."""

from types import SimpleNamespace

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests.inference.replies import CROP, FINAL, STAGE2
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.inference import engine
from zoomiqa_jax.inference.engine import Buckets, GenerateOutput
from zoomiqa_jax.inference.rounds import (
    ImageItem,
    RowPrompt,
    SamplingSettings,
    encode_images,
    render_prompt,
    sample_round,
)
from zoomiqa_jax.inference.rounds import row_keys as make_row_keys
from zoomiqa_jax.inference.zoom import run_zoomiqa
from zoomiqa_jax.model import Qwen25VL
from zoomiqa_jax.processing.crop import crop_and_zoom, crop_box
from zoomiqa_jax.processing.prompts import zoomiqa_stage1_messages
from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer
from zoomiqa_jax.train.grpo import policy_outputs
from zoomiqa_jax.train.rollout import (
    RolloutError,
    build_rollout_batch,
    group_stage1_generate,
    rating_token_mask,
    rollout_metrics,
    trajectory_problem,
)
from zoomiqa_jax.train.sft_data import SequenceTooLongError

CFG = ModelConfig.tiny()
BUCKETS = Buckets((1152,), (64,), (8,))
SETTINGS = SamplingSettings(max_new_tokens=8, buckets=BUCKETS)
SIZES = dict(min_pixels=SETTINGS.min_pixels, max_pixels=SETTINGS.max_pixels)
SEQ, PATCHES = (1024, 1280, 2048), (64, 256)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_TOKENIZER_DIR)


@pytest.fixture(scope="module")
def model():
    return Qwen25VL(CFG, rngs=nnx.Rngs(0))


def image(w=84, h=56, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def scripted(tok, pick):
    """A fake sampler: each row answers `pick(prompt text)` then `<|im_end|>`; token k gets log-prob -(k+1)/100."""

    def generate(model, ids, mask, pixels, grids, *, max_new_tokens, eos_token_ids, row_keys, **kw):
        rows = [tok(pick(tok.decode([int(t) for t in ids[r][mask[r] == 1]])), add_special_tokens=False)["input_ids"]
                + [eos_token_ids[0]] for r in range(len(ids))]
        width = max(len(g) for g in rows)
        tokens = np.full((len(ids), width), eos_token_ids[0], np.int32)
        logps = np.zeros(tokens.shape, np.float32)
        for r, gen in enumerate(rows):
            tokens[r, :len(gen)] = gen
            logps[r, :len(gen)] = -(np.arange(len(gen)) + 1) / 100
        return GenerateOutput(tokens, logps, np.asarray([len(g) for g in rows], np.int32))

    return generate


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def marked(tok, ids):
    mask = rating_token_mask(tok, ids)
    assert mask.dtype == bool and mask.shape == (len(ids),)
    where = np.flatnonzero(mask)
    if len(where):
        assert (np.diff(where) == 1).all(), "rating tokens are contiguous"
    return tok.decode([ids[i] for i in where])


# ---- rating tokens ----

def test_rating_token_mask_hand_made_replies(tok):
    im_end = CFG.eos_token_id
    assert marked(tok, ids_of(tok, CROP) + [im_end]).strip() == "3.25"
    assert marked(tok, ids_of(tok, '<answer>{"rating": "4.5"}</answer>')) == "4.5"  # the quotes are not rating
    assert marked(tok, ids_of(tok, '<answer>{"rating":3}</answer>')) == "3"
    assert marked(tok, ids_of(tok, "<think>2.0</think><answer>4.25</answer>")) == "4.25"  # VisualQuality-R1
    assert marked(tok, ids_of(tok, "<think>x</think><answer>-1.5</answer>")) == "-1.5"  # its sign is read too
    two = '<answer>{"rating": 1.5}</answer> then <answer>{"rating": 4.75}</answer>'
    assert marked(tok, ids_of(tok, two)).strip() == "4.75"  # the LAST answer block
    # official: the object the authors' regex reads (the first block that is one object), as its parser rates it
    official = lambda text: tok.decode([ids_of(tok, text)[i] for i in np.flatnonzero(  # noqa: E731
        rating_token_mask(tok, ids_of(tok, text), official=True))])
    assert official(two).strip() == "1.5"
    assert official('<answer>x {"rating": 1.5}</answer> <answer>{"rating": 4.75}</answer>').strip() == "4.75"
    assert official("<think>x</think><answer>4.25</answer>") == ""  # no object: no rating for this protocol
    wide = 'é日本 ünï <answer>{"rating": 2.5}</answer>'  # multi-byte characters before the rating
    assert marked(tok, ids_of(tok, wide)).strip() == "2.5"
    for text in ["no answer here", "<answer>{\"tool\": \"final\"}</answer>", "<answer>{\"rating\": \"high\"}</answer>",
                 '<answer>{"rating": 3.5}', "", "<answer></answer>"]:
        assert not rating_token_mask(tok, ids_of(tok, text)).any(), text


def test_rating_token_mask_never_raises_on_garbage(tok):
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = [int(t) for t in rng.integers(0, CFG.text.vocab_size, 40)]
        rating_token_mask(tok, ids)
    split = ids_of(tok, "日本") + ids_of(tok, '<answer>{"rating": 2}</answer>')
    assert marked(tok, split[1:]).strip() == "2"  # starts inside a multi-byte character
    assert not rating_token_mask(tok, [10**7, 3, 4]).any()
    assert rating_token_mask(tok, []).shape == (0,)


# ---- the rollout batch ----

@pytest.fixture(scope="module")
def scripted_trajs(tok):
    """A crop trajectory (stage 1 3.25, crops, stage 2 1.5) and a no-crop one (2.75) from run_zoomiqa."""
    items = [ImageItem("crop.png", image(84, 56, 1), index=0), ImageItem("final.png", image(56, 56, 2), index=1)]
    def stage1(model, ids, mask, pixels, grids, **kw):  # row r of stage 1 answers texts[r]
        texts = [CROP, FINAL] + [""] * (len(ids) - 2)
        it = iter(texts)
        return scripted(tok, lambda _: next(it))(model, ids, mask, pixels, grids, **kw)

    trajs = run_zoomiqa(SimpleNamespace(config=CFG), tok, items, SETTINGS, stage1_generate_fn=stage1,
                        generate_fn=scripted(tok, lambda _: STAGE2))
    assert [len(t.rounds) for t in trajs] == [2, 1] and [t.rating for t in trajs] == [1.5, 2.75]
    return trajs, [it.image for it in items]


def test_batch_of_crop_and_no_crop_trajectories(tok, model, scripted_trajs):
    """One row per round: the crop trajectory's stage 1 (its prompt and image as sampled, its reply) and stage 2
    (the stage-2 prompt, the stage-1 reply in its history as context, its reply), the no-crop one, one padding
    row."""
    trajs, originals = scripted_trajs
    adv = np.array([0.5, -0.5])
    batch = build_rollout_batch(trajs, originals, adv, tok, CFG, **SIZES, seq_buckets=SEQ, patch_buckets=PATCHES,
                                candidate_slots=8, pad_token_id=CFG.bos_token_id, rows=4)
    n, t = batch["input_ids"].shape
    assert (n, t) == (4, 1280)
    crop, final = trajs
    rows = [(crop.rounds[0], "3.25"), (crop.rounds[1], "1.5"), (final.rounds[0], "2.75")]
    assert crop.token_ids == crop.rounds[1].prompt_ids + crop.rounds[1].output_ids
    for row, (rnd, rating) in enumerate(rows):
        ids = rnd.prompt_ids + rnd.output_ids
        k, start = len(ids), len(rnd.prompt_ids)
        assert batch["input_ids"][row, :k].tolist() == ids
        assert (batch["input_ids"][row, k:] == CFG.bos_token_id).all()
        assert batch["attention_mask"][row].tolist() == [1] * k + [0] * (t - k)
        assert batch["loss_mask"][row].tolist() == [0] * start + [1] * (k - start) + [0] * (t - k)
        np.testing.assert_array_equal(batch["sample_logp"][row, start:k], np.float32(rnd.output_logprobs))
        assert not batch["sample_logp"][row, :start].any() and not batch["sample_logp"][row, k:].any()
        cand = np.flatnonzero(batch["candidate_mask"][row])
        assert batch["logit_positions"][row].tolist() == cand.tolist() + [-1] * (8 - len(cand))
        assert batch["loss_mask"][row, cand].all()  # candidates are generated tokens
        assert tok.decode(batch["input_ids"][row, cand].tolist()).strip() == rating
    # the stage-1 reply also sits in the stage-2 history, as context only (trained in row 0)
    reply = crop.rounds[0].output_ids
    history = crop.rounds[1].prompt_ids
    at = next(i for i in range(len(history)) if history[i:i + len(reply) - 1] == reply[:-1])
    assert not batch["loss_mask"][1, at:at + len(reply)].any()
    np.testing.assert_array_equal(batch["advantages"], np.float32([0.5, 0.5, -0.5, 0.0]))
    n_crop = len(crop.rounds[0].output_ids) + len(crop.rounds[1].output_ids)
    assert batch["seq_tokens"].tolist() == [n_crop, n_crop, len(final.rounds[0].output_ids), 0]
    assert batch["row_trajectory"].tolist() == [0, 0, 1, -1]
    # the padding row: one attended pad token, nothing trained, no image, no candidate
    assert batch["attention_mask"][3].tolist() == [1] + [0] * (t - 1) and not batch["loss_mask"][3].any()
    assert (batch["logit_positions"][3] == -1).all()

    # images: row 0 the crop trajectory's original, row 1 the original and its crop (cut from the original),
    # row 2 the other original, row 3 none
    box = crop_box(crop.rounds[0].bbox_requested, *originals[0].size)
    assert list(box.pixel) == crop.rounds[0].bbox_pixels
    enc = [encode_images([originals[0]], SETTINGS),
           encode_images([originals[0], crop_and_zoom(originals[0], box)], SETTINGS),
           encode_images([originals[1]], SETTINGS)]
    grids = np.concatenate([e.grids for e in enc])
    assert batch["image_grid_thw"].tolist() == grids.tolist() == crop.rounds[0].image_grids + \
        crop.rounds[1].image_grids + final.rounds[0].image_grids
    assert batch["image_counts"].tolist() == [1, 2, 1, 0]
    real = sum(len(e.pixel_values) for e in enc)
    assert real > 64 and batch["pixel_values"].shape[0] == 256 and batch["patch_mask"].sum() == real
    np.testing.assert_array_equal(batch["pixel_values"][:real], np.concatenate([e.pixel_values for e in enc]))
    assert not batch["pixel_values"][real:].any()
    assert batch["position_ids"].shape == (3, 4, 1280)

    logp, slots = policy_outputs(model, batch)
    assert logp.shape == (4, 1280) and slots.shape == (4, 8, CFG.text.vocab_size)
    assert np.isfinite(np.asarray(logp)).all() and np.isfinite(np.asarray(slots)).all()
    unpadded = build_rollout_batch(trajs, originals, adv, tok, CFG, **SIZES, seq_buckets=SEQ,
                                   patch_buckets=PATCHES, candidate_slots=8, pad_token_id=CFG.bos_token_id)
    assert unpadded["input_ids"].shape[0] == 3
    with pytest.raises(ValueError, match="rows=2 is fewer than the 3 rounds"):
        build_rollout_batch(trajs, originals, adv, tok, CFG, **SIZES, seq_buckets=SEQ, patch_buckets=PATCHES,
                            pad_token_id=CFG.bos_token_id, rows=2)


def test_each_round_row_is_what_its_sampler_saw(tok, model):
    """The ids, attention and pixels the stage-1 and the stage-2 sampler were called with, with the tokens they
    returned, are exactly the batch's row 0 and row 1 (so the forward reproduces the sampling-time log-probs of
    both replies: here the sampler's log-probs are the model's own, checked to 1e-4)."""
    from zoomiqa_jax.train.grpo import token_logprobs
    from zoomiqa_jax.train.sft_data import add_model_inputs
    from zoomiqa_jax.train.step import batch_logits

    seen = []

    def recorder(text):
        def generate(model_, ids, mask, pixels, grids, *, max_new_tokens, eos_token_ids, row_keys, **kw):
            gen = ids_of(tok, text) + [eos_token_ids[0]]
            prompt = [int(x) for x in np.asarray(ids[0])[np.asarray(mask[0]) == 1]]
            seen.append((prompt, gen, np.asarray(pixels), np.asarray(grids)))
            full = {"input_ids": np.asarray([prompt + gen], np.int32),
                    "attention_mask": np.ones((1, len(prompt) + len(gen)), np.int32),
                    "pixel_values": np.asarray(pixels)[:int(np.asarray(grids).prod(-1).sum())],
                    "image_grid_thw": np.asarray(grids)}
            full = add_model_inputs(full, CFG, PATCHES)
            lp = np.asarray(token_logprobs(batch_logits(model, full), full["input_ids"]))[0, len(prompt):]
            tokens = np.asarray([gen], np.int32)
            return GenerateOutput(tokens, lp[None].astype(np.float32), np.asarray([len(gen)], np.int32))
        return generate

    item = ImageItem("seen.png", image(84, 56, 7), index=0, question="How good is this image?")
    traj = run_zoomiqa(model, tok, [item], SETTINGS, stage1_generate_fn=recorder(CROP),
                       generate_fn=recorder(STAGE2))[0]
    assert len(traj.rounds) == 2 and len(seen) == 2
    batch = build_rollout_batch([traj], [item.image], np.ones(1), tok, CFG, **SIZES, seq_buckets=SEQ,
                                patch_buckets=PATCHES, pad_token_id=CFG.bos_token_id)
    offset = 0
    for row, (prompt, gen, pixels, grids) in enumerate(seen):
        k = len(prompt) + len(gen)
        assert batch["input_ids"][row, :k].tolist() == prompt + gen
        assert batch["loss_mask"][row].sum() == len(gen)
        n_patches = int(grids.prod(-1).sum())
        np.testing.assert_array_equal(batch["pixel_values"][offset:offset + n_patches], pixels[:n_patches])
        offset += n_patches
    logp, _ = policy_outputs(model, batch)
    mask = batch["loss_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(logp)[mask], batch["sample_logp"][mask], atol=1e-4, rtol=0)


def test_logprobs_reproduce_the_sampling_context(tok, model):
    """A no-crop trajectory sampled by the real engine at temperature 1: the batch's forward recomputes the
    sampling-time log-probs of every generated token."""
    settings = SamplingSettings(max_new_tokens=8, temperature=1.0, seed=3, buckets=BUCKETS)
    item = ImageItem("real.png", image(56, 84, 5), index=0, question="How good is this image?")
    traj = run_zoomiqa(model, tok, [item], settings, max_turns=1)[0]
    assert len(traj.rounds) == 1 and trajectory_problem(traj, CFG) is None
    batch = build_rollout_batch([traj], [item.image], np.zeros(1), tok, CFG, **SIZES, seq_buckets=SEQ,
                                patch_buckets=PATCHES, pad_token_id=CFG.bos_token_id)
    logp, _ = policy_outputs(model, batch)
    mask = batch["loss_mask"].astype(bool)
    assert mask.sum() == len(traj.rounds[0].output_ids) > 0
    np.testing.assert_allclose(np.asarray(logp)[mask], batch["sample_logp"][mask], atol=1e-4, rtol=0)


def test_tempered_logprobs_are_the_sampling_distribution(tok, model):
    """Rollouts at temperature T < 1 are drawn from softmax(filter_logits(logits, T)) (the engine's candidates
    with top-k 0, top-p 1); the loss, pi_old and the reference must take log-probs of that same distribution."""
    import jax
    import jax.numpy as jnp

    from zoomiqa_jax.inference.sampling import filter_logits
    from zoomiqa_jax.train.grpo import make_old_policy
    from zoomiqa_jax.train.step import batch_logits

    settings = SamplingSettings(max_new_tokens=8, temperature=0.6, seed=4, buckets=BUCKETS)
    item = ImageItem("real.png", image(56, 84, 6), index=0, question="How good is this image?")
    traj = run_zoomiqa(model, tok, [item], settings, max_turns=1)[0]
    batch = build_rollout_batch([traj], [item.image], np.zeros(1), tok, CFG, **SIZES, seq_buckets=SEQ,
                                patch_buckets=PATCHES, pad_token_id=CFG.bos_token_id)
    for key in ("sample_logp", "image_grid_thw", "image_counts", "patch_mask"):
        batch.pop(key, None)
    logits = batch_logits(model, batch)
    sampler_logp = jax.nn.log_softmax(filter_logits(logits, 0.6, 0, 1.0), axis=-1)
    want = np.asarray(jnp.take_along_axis(sampler_logp[:, :-1], batch["input_ids"][:, 1:, None], axis=-1)[..., 0])
    mask = batch["loss_mask"].astype(bool)[:, 1:]
    logp, slots = policy_outputs(model, batch, 0.6)
    np.testing.assert_allclose(np.asarray(logp)[:, 1:][mask], want[mask], atol=1e-5, rtol=0)
    untempered, raw_slots = policy_outputs(model, batch)
    assert np.abs(np.asarray(untempered - logp)[:, 1:][mask]).max() > 1e-3  # the temperature is not a no-op
    np.testing.assert_allclose(np.asarray(slots), np.asarray(raw_slots) / 0.6, rtol=1e-6, atol=1e-6)
    graphdef, params = nnx.split(model, nnx.Param)
    old = make_old_policy(graphdef, params, temperature=0.6)(params, batch)
    np.testing.assert_allclose(np.asarray(old["old_logp"]), np.asarray(logp), atol=1e-6, rtol=0)


def test_refusals_name_the_image(tok, scripted_trajs):
    trajs, originals = scripted_trajs
    kw = dict(seq_buckets=SEQ, patch_buckets=PATCHES, pad_token_id=CFG.bos_token_id, **SIZES)
    with pytest.raises(SequenceTooLongError, match="crop.png"):
        short = (len(trajs[0].token_ids) - 1,)
        build_rollout_batch(trajs[:1], originals[:1], np.zeros(1), tok, CFG, **dict(kw, seq_buckets=short))
    # more rating tokens than slots: the slots double until every candidate fits (none is dropped)
    grown = build_rollout_batch(trajs, originals, np.zeros(2), tok, CFG, candidate_slots=1, **kw)
    counts = grown["candidate_mask"].sum(axis=1)
    assert grown["logit_positions"].shape[1] >= counts.max() > 1
    assert ((grown["logit_positions"] >= 0).sum(axis=1) == counts).all()
    bad = type(trajs[1])(image="broken.png", task="zoomiqa", invalid="image_error", invalid_round=0)
    with pytest.raises(RolloutError, match="broken.png.*image error"):
        build_rollout_batch([bad], originals[:1], np.zeros(1), tok, CFG, **kw)
    with pytest.raises(RolloutError, match="crop.png.*sampled on"):  # not the original it was sampled on
        build_rollout_batch(trajs[:1], [image(84, 56 * 3, 1)], np.zeros(1), tok, CFG, **kw)
    with pytest.raises(RolloutError, match="crop.png.*grids"):  # other processor sizes than sampling's
        build_rollout_batch(trajs[:1], originals[:1], np.zeros(1), tok, CFG, **dict(kw, min_pixels=112 * 112))


def test_rollout_metrics(scripted_trajs):
    trajs, _ = scripted_trajs
    m = rollout_metrics(trajs)
    assert m["rollout/crop_rate"] == 0.5 and m["rollout/mean_turns"] == 1.5 and m["rollout/invalid_rate"] == 0.0
    total = sum(len(r.output_ids) for t in trajs for r in t.rounds)
    assert m["rollout/mean_response_tokens"] == total / 2 and m["rollout/hit_token_limit_rate"] == 0.0


# ---- group-shared stage-1 sampling ----

def replicated_rows(tok, n_images, group):
    rows = []
    for i in range(n_images):
        enc = encode_images([image(56 + 28 * (i % 2), 56, 10 + i)], SETTINGS)
        ids = render_prompt(tok, zoomiqa_stage1_messages("Rate it?"), enc)
        rows += [RowPrompt(ids, enc, i * group + k) for k in range(group)]
    return rows


def test_grouped_greedy_equals_ungrouped(tok, model):
    calls = []

    def spy(*args, **kw):
        calls.append((len(args[1]), kw.get("group", 1)))
        return engine.generate(*args, **kw)

    rows = replicated_rows(tok, 3, 2)  # 6 rows -> sample_round pads to 8 (the 2 pad rows form a run too)
    greedy = SamplingSettings(max_new_tokens=8, temperature=0.0, buckets=BUCKETS)
    kw = dict(round_index=0, pad_token_id=CFG.bos_token_id)
    grouped = sample_round(model, rows, greedy, generate_fn=group_stage1_generate(2, spy), **kw)
    assert calls == [(4, 2)]
    plain = sample_round(model, rows, greedy, generate_fn=engine.generate, **kw)
    assert [r.ids for r in grouped] == [r.ids for r in plain]
    np.testing.assert_allclose([r.logprobs for r in grouped], [r.logprobs for r in plain], atol=1e-5)


def test_grouped_sampling_equals_generate_with_group(tok, model):
    group = 2
    rows = replicated_rows(tok, 2, group)
    width = max(len(r.ids) for r in rows)
    ids = np.full((len(rows), width), CFG.bos_token_id, np.int32)
    mask = np.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, width - len(row.ids):], mask[r, width - len(row.ids):] = row.ids, 1
    px = np.concatenate([r.images.pixel_values for r in rows])
    grids = np.concatenate([r.images.grids for r in rows])
    keys = make_row_keys(7, [r.index for r in rows], 0)
    kw = dict(max_new_tokens=8, temperature=1.0, top_k=50, top_p=0.95, row_keys=keys, buckets=BUCKETS,
              eos_token_ids=(CFG.eos_token_id, CFG.bos_token_id))
    got = group_stage1_generate(group)(model, ids, mask, px, grids, **kw)
    heads = rows[::group]
    want = engine.generate(model, ids[::group], mask[::group], np.concatenate([r.images.pixel_values for r in heads]),
                           np.concatenate([r.images.grids for r in heads]), group=group, **kw)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert len({tuple(t) for t in got.tokens[:group]}) > 1, "the group's samples should differ"


def test_grouped_falls_back_when_rows_are_not_runs(tok):
    seen = []

    def spy(model, ids, mask, pixels, grids, **kw):
        seen.append((len(ids), kw.get("group", 1), None if grids is None else len(grids)))
        return GenerateOutput(np.zeros((len(ids), 1), np.int32), np.zeros((len(ids), 1)), np.ones(len(ids)))

    stub = SimpleNamespace(config=CFG)
    rows = replicated_rows(tok, 2, 2)
    mixed = [rows[0], rows[2], rows[1], rows[3]]  # not consecutive runs
    for batch in (mixed, rows[:3]):
        sample_round(stub, batch, SETTINGS, round_index=0, pad_token_id=CFG.bos_token_id,
                     generate_fn=group_stage1_generate(2, spy))
    assert seen == [(4, 1, 4), (4, 1, 3)]


def test_run_zoomiqa_with_replicated_items_and_grouped_stage1(tok, model):
    """The intended use: each image replicated G times with one explicit question and distinct indices."""
    group, settings = 2, SamplingSettings(max_new_tokens=8, temperature=1.0, seed=1, buckets=BUCKETS)
    items = [ImageItem(f"im{i}.png", image(56, 56, 20 + i), index=i * group + k, question="Rate this image.")
             for i in range(2) for k in range(group)]
    groups = []
    spy = lambda *a, **kw: groups.append((len(a[1]), kw.get("group"))) or engine.generate(*a, **kw)
    grouped = run_zoomiqa(model, tok, items, settings, max_turns=1,
                          stage1_generate_fn=group_stage1_generate(group, spy))
    assert groups == [(2, group)]  # one prefill per image
    plain = run_zoomiqa(model, tok, items, settings, max_turns=1)
    assert [t.token_ids for t in grouped] == [t.token_ids for t in plain]
    np.testing.assert_allclose(np.concatenate([t.token_logprobs for t in grouped]),
                               np.concatenate([t.token_logprobs for t in plain]), atol=1e-5)
    assert grouped[0].token_ids != grouped[1].token_ids, "replicas sample differently"


def test_row_bucket_pads_to_a_few_counts_that_shard():
    from zoomiqa_jax.train.rollout import row_bucket

    assert [row_bucket(r, 32) for r in (32, 33, 40, 41, 48, 49, 64)] == [32, 40, 40, 48, 48, 64, 64]
    assert row_bucket(30, 32) == 32  # dropped trajectories: still the mini-batch's shape
    assert row_bucket(33, 32, multiple=16) == 48 and row_bucket(40, 32, multiple=16) == 48
    assert row_bucket(20, 12, multiple=8) == 24  # 12 x 1.5 = 18 -> 24
    assert row_bucket(70, 32) == 70  # more rows than two per trajectory (never from two-round rollouts)
