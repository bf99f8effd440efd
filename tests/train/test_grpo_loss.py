"""The GRPO loss (supplement Eq. 7 with KL-Coverage, Eqs. 1-2) against a straightforward PyTorch reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from zoomiqa_jax.train.grpo_loss import (
    GrpoLossConfig,
    exact_kl,
    grpo_loss,
    k3_kl,
    klcov_selection,
    top_fraction_count,
    verl_klcov_selection,
)

N, T, V = 6, 9, 7


def config(kl_cov="zoomiqa", agg="seq-mean-token-mean"):
    """The configs under test; larger fractions than the papers' so a batch this small has several picks."""
    return GrpoLossConfig(loss_agg_mode=agg, kl_cov=kl_cov, klc_top_p=0.3, kl_cov_ratio=0.1, ref_kl_beta=0.05)


def make_batch(seed, *, cand_frac=0.6):
    """A tiny batch: masks with an empty row, garbage where masked, ratios far enough from 1 to clip."""
    rng = np.random.default_rng(seed)
    mask = rng.random((N, T)) < 0.75
    mask[2] = False  # a sequence without any valid token
    cand = (rng.random((N, T)) < cand_frac) & mask
    logp = rng.normal(-1.5, 0.8, (N, T)).astype(np.float32)
    old_logp = (logp + rng.normal(0.0, 0.35, (N, T))).astype(np.float32)
    ref_logp = (logp + rng.normal(0.0, 0.2, (N, T))).astype(np.float32)
    logp[~mask] = -np.inf  # must never leak into the loss or its gradient
    old_logp[~mask] = np.nan
    adv = rng.normal(0.0, 1.0, N).astype(np.float32)
    logits = rng.normal(0.0, 1.5, (N, T, V)).astype(np.float32)
    old_logits = (logits + rng.normal(0.0, 0.5, (N, T, V))).astype(np.float32)
    return dict(
        logp=logp, old_logp=old_logp, ref_logp=ref_logp, adv=adv, mask=mask, cand=cand,
        logits=logits, old_logits=old_logits,
    )


def reference(b, cfg):
    """Loops over tokens in float64 torch; returns loss, d loss / d logp, d loss / d logits, selected set."""
    logp = torch.tensor(np.where(b["mask"], b["logp"], 0.0), dtype=torch.float64, requires_grad=True)
    logits = torch.tensor(b["logits"], dtype=torch.float64, requires_grad=True)
    old = torch.tensor(np.where(b["mask"], b["old_logp"], 0.0), dtype=torch.float64)
    ref = torch.tensor(b["ref_logp"], dtype=torch.float64)
    adv = [float(a) for a in b["adv"]]
    valid = [(n, t) for n in range(N) for t in range(T) if b["mask"][n, t]]
    mean_lp = sum(logp[v].item() for v in valid) / len(valid)
    mean_a = sum(adv[n] for n, _ in valid) / len(valid)
    cov = {v: (logp[v].item() - mean_lp) * (adv[v[0]] - mean_a) for v in valid}
    if cfg.kl_cov == "zoomiqa":
        eligible, frac = [v for v in valid if b["cand"][v]], cfg.klc_top_p
    elif cfg.kl_cov == "verl":
        eligible, frac = valid, cfg.kl_cov_ratio
    else:
        eligible, frac = [], 1.0
    k = max(1, int(len(eligible) * frac)) if eligible else 0
    selected = set(sorted(eligible, key=lambda v: (-cov[v], v[0] * T + v[1]))[:k])

    tok = {}
    for n, t in valid:
        r = torch.exp(logp[n, t] - old[n, t])
        if cfg.kl_cov == "verl":
            x = -r * adv[n]
            if (n, t) in selected:
                x = x + cfg.kl_cov_coef * torch.abs(logp[n, t] - old[n, t])
        else:
            x = -torch.min(r * adv[n], torch.clamp(r, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv[n])
        d = ref[n, t] - logp[n, t]
        x = x + cfg.ref_kl_beta * (torch.exp(d) - d - 1)
        tok[n, t] = x
    if cfg.loss_agg_mode == "token-mean":
        loss = sum(tok.values()) / len(tok)
    else:
        seqs = [[tok[v] for v in valid if v[0] == n] for n in range(N)]
        seqs = [sum(s) / len(s) for s in seqs if s]
        loss = sum(seqs) / len(seqs)
    if cfg.kl_cov == "zoomiqa" and selected:
        kls = []
        for n, t in selected:
            old_lp = torch.log_softmax(torch.tensor(b["old_logits"][n, t], dtype=torch.float64), -1)
            kls.append(torch.sum(old_lp.exp() * (old_lp - torch.log_softmax(logits[n, t], -1))))
        loss = loss + cfg.klc_beta * sum(kls) / len(kls)
    loss.backward()
    g_logits = logits.grad.numpy() if logits.grad is not None else np.zeros(logits.shape)
    return loss.item(), logp.grad.numpy(), g_logits, selected


@functools.cache
def _loss_and_grad(cfg, with_positions):
    def f(logp, logits, old_logp, adv, mask, cand, old_logits, ref_logp, positions):
        return grpo_loss(
            logp, old_logp, adv, mask, cfg, candidate_mask=cand, logits=logits, old_logits=old_logits,
            ref_logp=ref_logp, logit_positions=positions if with_positions else None,
        )

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))


def run_jax(b, cfg, *, logit_positions=None):
    fn = _loss_and_grad(cfg, logit_positions is not None)
    (loss, metrics), (g_logp, g_logits) = fn(
        *(jnp.asarray(b[k]) for k in ("logp", "logits", "old_logp", "adv", "mask", "cand", "old_logits")),
        jnp.asarray(b["ref_logp"]),
        jnp.zeros((), jnp.int32) if logit_positions is None else logit_positions,
    )
    return float(loss), np.asarray(g_logp), np.asarray(g_logits), metrics


def selected_set(mask):
    return {(int(n), int(t)) for n, t in zip(*np.nonzero(np.asarray(mask)))}


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean"])
@pytest.mark.parametrize("kl_cov", ["zoomiqa", "verl", "none"])
def test_loss_and_gradient_match_torch_reference(agg, kl_cov):
    cfg = config(kl_cov, agg)
    for seed in range(3):
        b = make_batch(seed)
        ref_loss, ref_g_logp, ref_g_logits, ref_sel = reference(b, cfg)
        loss, g_logp, g_logits, metrics = run_jax(b, cfg)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g_logp, ref_g_logp, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(g_logits, ref_g_logits, rtol=1e-4, atol=1e-6)
        assert int(metrics["klcov/active_tokens"]) == len(ref_sel)
        if kl_cov != "verl":
            assert 0.0 < float(metrics["pg/clip_frac"]) < 1.0  # the clipped branch is exercised


@pytest.mark.parametrize("seed", range(5))
def test_klcov_selection_matches_reference_exactly(seed):
    b = make_batch(seed, cand_frac=0.9)
    args = (jnp.asarray(b["logp"]), jnp.asarray(b["adv"]), jnp.asarray(b["mask"]))
    cfg = GrpoLossConfig(kl_cov="zoomiqa", klc_top_p=0.25)
    _, _, _, want = reference(b, cfg)
    got = selected_set(klcov_selection(*args, jnp.asarray(b["cand"]), cfg.klc_top_p))
    assert got == want and len(want) == int(0.25 * np.sum(b["cand"] & b["mask"]))
    cfg = GrpoLossConfig(kl_cov="verl", kl_cov_ratio=0.2)
    _, _, _, want = reference(b, cfg)
    assert selected_set(verl_klcov_selection(*args, cfg.kl_cov_ratio)) == want


def test_klcov_penalizes_only_candidates_at_papers_fraction():
    b = make_batch(0)
    sel = np.asarray(klcov_selection(jnp.asarray(b["logp"]), jnp.asarray(b["adv"]), jnp.asarray(b["mask"]),
                                     jnp.asarray(b["cand"]), 0.02))
    assert sel.sum() == 1  # p = 0.02 of ~20 candidates: at least one
    assert np.all(b["cand"][sel])


def test_ties_go_to_the_earlier_sequence_then_token():
    mask = np.ones((3, 4), bool)
    logp = jnp.full((3, 4), -1.0)
    # Equal advantages: every Cov is (+/-)0, a full tie; the first k candidates in row-major order win.
    cand = np.array([[0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]], bool)
    sel = klcov_selection(logp, jnp.zeros(3), jnp.asarray(mask), jnp.asarray(cand), 0.5)
    assert selected_set(sel) == {(0, 1), (0, 3), (1, 0)}
    # Sequences 0 and 2 share the top advantage; their tokens with the lowest logp tie for the top Cov.
    logp = jnp.asarray([[-1.0, -3.0, -1.0, -1.0], [-1.0] * 4, [-1.0, -1.0, -3.0, -3.0]])
    adv, cand = jnp.asarray([-1.0, 0.5, -1.0]), jnp.ones((3, 4), bool)
    sel = klcov_selection(logp, adv, jnp.asarray(mask), cand, 0.1)
    assert selected_set(sel) == {(0, 1)}
    sel = klcov_selection(logp, adv, jnp.asarray(mask), cand, 0.2)
    assert selected_set(sel) == {(0, 1), (2, 2)}


def test_no_candidates_means_no_penalty_and_finite_gradients():
    b = make_batch(1)
    b["cand"][:] = False
    loss, g_logp, g_logits, metrics = run_jax(b, config("zoomiqa"))
    assert int(metrics["klcov/active_tokens"]) == 0 and float(metrics["klcov/value"]) == 0.0
    assert np.isfinite(loss) and np.all(np.isfinite(g_logp)) and np.all(g_logits == 0.0)
    assert loss == run_jax(b, config("none"))[0]


@pytest.mark.parametrize("kl_cov", ["zoomiqa", "verl"])
def test_penalty_is_exactly_zero_when_old_equals_current(kl_cov):
    b = make_batch(2)
    b["old_logp"] = np.where(b["mask"], b["logp"], 0.0).astype(np.float32)
    b["ref_logp"] = b["old_logp"].copy()  # no reference KL either
    b["old_logits"] = b["logits"].copy()
    loss, _, _, metrics = run_jax(b, config(kl_cov))
    assert int(metrics["klcov/active_tokens"]) >= 1
    assert float(metrics["klcov/value"]) == 0.0 and float(metrics["klcov/active"]) == 0.0
    assert float(metrics["pg/clip_frac"]) == 0.0 and float(metrics["pg/ratio_mean"]) == 1.0
    # At ratio 1 the objective is the mean advantage, with nothing added.
    assert loss == run_jax(b, config("none"))[0]
    assert float(exact_kl(jnp.asarray(b["logits"]), jnp.asarray(b["logits"])).max()) == 0.0


def test_logit_slots_equal_full_logits():
    b = make_batch(3)
    cfg = config("zoomiqa")
    full_loss, full_g_logp, full_g_logits, full_m = run_jax(b, cfg)
    k = int((b["cand"]).sum(axis=1).max()) + 1  # one spare slot per row, unused (-1, garbage logits)
    pos = np.full((N, k), -1, np.int32)
    slot_logits = np.full((N, k, V), np.nan, np.float32)
    slot_old = np.full((N, k, V), np.nan, np.float32)
    for n in range(N):
        ts = np.nonzero(b["cand"][n])[0][::-1]  # any order within a row
        pos[n, : len(ts)] = ts
        slot_logits[n, : len(ts)] = b["logits"][n, ts]
        slot_old[n, : len(ts)] = b["old_logits"][n, ts]
    slot_b = dict(b, logits=slot_logits, old_logits=slot_old)
    loss, g_logp, g_slot, metrics = run_jax(slot_b, cfg, logit_positions=jnp.asarray(pos))
    assert loss == pytest.approx(full_loss, rel=1e-6)
    np.testing.assert_allclose(g_logp, full_g_logp, rtol=1e-6, atol=1e-7)
    for n in range(N):
        for j, t in enumerate(pos[n]):
            if t >= 0:
                np.testing.assert_allclose(g_slot[n, j], full_g_logits[n, t], rtol=1e-6, atol=1e-7)
    assert np.all(g_slot[pos < 0] == 0.0)
    assert float(metrics["klcov/missing_logits"]) == 0.0
    assert float(metrics["entropy/answer"]) == pytest.approx(float(full_m["entropy/answer"]), rel=1e-6)


def test_missing_logit_slot_is_reported():
    b = make_batch(3)
    pos = -np.ones((N, 1), np.int32)
    logits = np.zeros((N, 1, V), np.float32)
    slot_b = dict(b, logits=logits, old_logits=logits)
    _, _, _, metrics = run_jax(slot_b, config(), logit_positions=jnp.asarray(pos))
    assert float(metrics["klcov/missing_logits"]) == int(metrics["klcov/active_tokens"]) > 0


def test_entropy_metric_is_the_mean_entropy_of_answer_tokens():
    b = make_batch(4)
    _, _, _, metrics = run_jax(b, config())
    lp = b["logits"] - np.log(np.exp(b["logits"]).sum(-1, keepdims=True))
    ent = -(np.exp(lp) * lp).sum(-1)
    assert float(metrics["entropy/answer"]) == pytest.approx(ent[b["cand"] & b["mask"]].mean(), rel=1e-5)


def test_exact_kl_and_k3_match_direct_formulas():
    rng = np.random.default_rng(7)
    a, c = rng.normal(size=(5, 11)), rng.normal(size=(5, 11))
    pa = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    pc = np.exp(c) / np.exp(c).sum(-1, keepdims=True)
    want = (pa * (np.log(pa) - np.log(pc))).sum(-1)
    got = exact_kl(jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    lp, ref = rng.normal(size=20), rng.normal(size=20)
    want = np.exp(ref - lp) - (ref - lp) - 1
    got = k3_kl(jnp.asarray(lp, jnp.float32), jnp.asarray(ref, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("ratio", [0.02, 0.0002, 0.07, 0.29, 0.3])
def test_top_fraction_count_equals_python_int(ratio):
    n = np.arange(0, 6001)
    got = np.asarray(jax.jit(functools.partial(top_fraction_count, ratio=ratio, n_max=6000))(jnp.asarray(n)))
    want = np.array([max(1, int(i * ratio)) if i > 0 else 0 for i in n])
    np.testing.assert_array_equal(got, want)


def test_jit_compiles_once_per_shape():
    traces = []

    @functools.partial(jax.jit, static_argnames="config")
    def step(logp, old_logp, adv, mask, cand, logits, old_logits, config):
        traces.append(1)
        return grpo_loss(logp, old_logp, adv, mask, config, candidate_mask=cand, logits=logits,
                         old_logits=old_logits)

    cfg = config()
    for seed in range(3):
        b = make_batch(seed)
        keys = ("logp", "old_logp", "adv", "mask", "cand", "logits", "old_logits")
        args = [jnp.asarray(b[k]) for k in keys]
        loss, _ = step(*args, config=cfg)
        assert np.isfinite(float(loss))
    assert len(traces) == 1


def test_config_rejects_unknown_modes():
    with pytest.raises(ValueError, match="loss_agg_mode"):
        GrpoLossConfig(loss_agg_mode="seq-mean-token-sum")
    with pytest.raises(ValueError, match="kl_cov"):
        GrpoLossConfig(kl_cov="clip_cov")
    with pytest.raises(ValueError, match="klc_top_p"):
        GrpoLossConfig(klc_top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        GrpoLossConfig(temperature=0.0)


@pytest.mark.parametrize("kl_cov", ["zoomiqa", "verl", "none"])
def test_rows_of_one_trajectory_keep_the_trajectory_mean(kl_cov):
    """A trajectory split over two rows (one per round, `train.rollout`) with `seq_tokens` = its token count,
    plus a padding row, gives the loss, metrics and gradient of the one-row layout (seq-mean-token-mean stays
    a mean over trajectories); without `seq_tokens` the split would weigh the two rows as two sequences."""
    cfg = config(kl_cov)
    b = make_batch(7)
    cut = T // 2
    first = np.zeros((N, T), bool)
    first[:, :cut] = True

    def split(x, pad):  # row 2n: tokens before `cut`, row 2n+1: the rest, then one padding row
        rows = np.repeat(np.asarray(x), 2, axis=0)
        return np.concatenate([rows, np.full((1, *rows.shape[1:]), pad, rows.dtype)])

    mask2 = split(b["mask"], False)
    mask2[:-1] &= np.concatenate([first, ~first], axis=1).reshape(2 * N, T)
    cand2 = split(b["cand"], False) & mask2
    seq_tokens = np.append(np.repeat(b["mask"].sum(axis=1), 2), 0).astype(np.int32)
    two = dict(logp=split(b["logp"], 0.0), old_logp=split(b["old_logp"], 0.0), adv=split(b["adv"], 0.0),
               mask=mask2, cand=cand2, logits=split(b["logits"], 0.0), old_logits=split(b["old_logits"], 0.0),
               ref_logp=split(b["ref_logp"], 0.0))

    def loss(d, logp, seq=None):
        return grpo_loss(logp, jnp.asarray(d["old_logp"]), jnp.asarray(d["adv"]), jnp.asarray(d["mask"]), cfg,
                         candidate_mask=jnp.asarray(d["cand"]), logits=jnp.asarray(d["logits"]),
                         old_logits=jnp.asarray(d["old_logits"]), ref_logp=jnp.asarray(d["ref_logp"]),
                         seq_tokens=None if seq is None else jnp.asarray(seq))

    (one, m1), g1 = jax.value_and_grad(lambda lp: loss(b, lp), has_aux=True)(jnp.asarray(b["logp"]))
    (split_loss, m2), g2 = jax.value_and_grad(lambda lp: loss(two, lp, seq_tokens), has_aux=True)(
        jnp.asarray(two["logp"]))
    np.testing.assert_allclose(float(split_loss), float(one), rtol=1e-6, atol=1e-7)
    for key in m1:
        np.testing.assert_allclose(float(m2[key]), float(m1[key]), rtol=1e-5, atol=1e-6, err_msg=key)
    g2 = np.asarray(g2)
    merged = np.where(first, g2[0:-1:2], g2[1::2])  # each token's gradient from the row that holds it
    np.testing.assert_allclose(merged, np.asarray(g1), rtol=1e-5, atol=1e-7)
    assert not g2[-1].any()
    # the rows' own counts reproduce the one-row formula when nothing is split
    same, _ = loss(b, jnp.asarray(b["logp"]), b["mask"].sum(axis=1))
    np.testing.assert_allclose(float(same), float(one), rtol=1e-6, atol=1e-7)
    if kl_cov == "none":
        naive, _ = loss(two, jnp.asarray(two["logp"]))
        assert abs(float(naive) - float(one)) > 1e-4  # the weighting matters
    with pytest.raises(ValueError, match="seq_tokens"):
        loss(b, jnp.asarray(b["logp"]), np.zeros(N + 1, np.int32))
