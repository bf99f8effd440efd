"""`zoomiqa plan`: the tiny configs' SFT step, GRPO update step and rollout generation program compile for a TPU
topology (v5p:2x2x1, 4 chips) on this CPU machine, from abstract shapes, with per-chip memory reported, and the
compiled FLOPs of the SFT step are held against the analytic count of train/flops.py (the MFU formula).

libtpu (the TPU compiler, jax's `tpu` extra) is in the `test` extra, so CI runs these; elsewhere they skip."""

from __future__ import annotations

import time

import pytest

from tests.test_cli_startup import _probe
from zoomiqa_jax.plan.topology import GIB, Chip, libtpu_available

TOPOLOGY = "v5p:2x2x1"
needs_libtpu = pytest.mark.skipif(not libtpu_available(),
                                  reason="libtpu is not installed (pip install 'zoomiqa-jax[plan]' or '.[test]')")


def test_plan_help_imports_no_heavy_library():
    last, output = _probe("zoomiqa_jax.cli", ["plan", "--help"])
    assert last == "RC 0 HEAVY []", last
    assert "--topology" in output


@pytest.fixture(scope="session")
def tiny_plans():
    """The three programs of the tiny configs compiled once for TOPOLOGY (about 100 s on two cores). GRPO with 2
    samples per image instead of 8: the same programs on a quarter of the rows, half the compile time."""
    from zoomiqa_jax.parallel.mesh import make_mesh
    from zoomiqa_jax.plan import programs
    from zoomiqa_jax.plan.topology import chip_of, topology_devices
    from zoomiqa_jax.train.config import load_train_config
    from zoomiqa_jax.train.grpo_config import load_grpo_config

    t0 = time.perf_counter()
    devices = topology_devices(TOPOLOGY)
    sft = load_train_config("configs/sft_tiny.yaml")
    grpo = load_grpo_config("configs/grpo_tiny.yaml", ["grpo.group_size=2"])
    mesh = make_mesh(sft.parallel.mesh, devices=devices)
    plans = {"sft_step": programs.plan_sft(sft, mesh), "grpo_step": programs.plan_grpo(grpo, mesh),
             "generate": programs.plan_generate(grpo, mesh)}
    print(f"compiled {sorted(plans)} for {TOPOLOGY} in {time.perf_counter() - t0:.0f} s")
    return plans, chip_of(devices[0]), mesh


@needs_libtpu
@pytest.mark.slow
def test_topology_mesh_is_the_slice(tiny_plans):
    _, chip, mesh = tiny_plans
    assert chip.name == "v5p" and chip.hbm_bytes == 95 * GIB
    assert dict(mesh.shape) == {"data": 4, "fsdp": 1, "tensor": 1}
    assert {d.platform for d in mesh.devices.flat} == {"tpu"}


@needs_libtpu
@pytest.mark.slow
@pytest.mark.parametrize("name", ["sft_step", "grpo_step", "generate"])
def test_per_chip_memory_is_reported(tiny_plans, name):
    plan = tiny_plans[0][name]
    assert plan.argument_bytes > 0 and plan.output_bytes > 0 and plan.temp_bytes > 0
    assert plan.peak_bytes == (plan.argument_bytes + plan.output_bytes - plan.alias_bytes + plan.temp_bytes
                               + plan.code_bytes)
    assert plan.compiled_flops > 0
    if name != "generate":  # the train steps donate parameters and optimizer state: outputs reuse them
        assert plan.alias_bytes > 0


@needs_libtpu
@pytest.mark.slow
def test_fit_verdict_against_hbm(tiny_plans):
    from zoomiqa_jax.plan.cli import verdict

    plans, chip, _ = tiny_plans
    fits, line = verdict(list(plans.values()), chip)
    assert fits and line.startswith("verdict: fits")
    small = Chip("v5e", plans["grpo_step"].peak_bytes - 1)  # one byte short for the largest program
    fits, line = verdict(list(plans.values()), small)
    assert not fits and "grpo_step" in line and "does NOT fit" in line


@needs_libtpu
@pytest.mark.slow
def test_analytic_count_is_a_lower_bound_of_the_compiled_sft_step(tiny_plans):
    """train/flops.py counts model FLOPs (matmuls, forward + backward); the chips execute at least those. A count
    that is 3x too large (forward + backward counted twice, as sft_loop's MFU did) exceeds the compiled FLOPs."""
    plan = tiny_plans[0]["sft_step"]
    assert plan.analytic_flops <= plan.compiled_flops, (plan.analytic_flops, plan.compiled_flops)


@needs_libtpu
@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "measured 2.67x (compiled 3.19e10 vs analytic 1.19e10, v5p:2x2x1, data=4): the vision tower runs replicated on "
    "every chip of a data-parallel mesh (its forward is 1.9 GFLOP per chip, 2.1 for the whole batch on one device) "
    "and the tiny model's vision attention (256-patch chunks for 100-patch images) and elementwise work add ~24% "
    "on one device; docs/scaling.md"))
def test_sft_step_flops_match_the_analytic_count(tiny_plans):
    """Compiled FLOPs (per chip x chips) of the SFT step within 10% of train/flops.py's count for the same batch
    (estimate_flops_per_token x tokens + estimate_vision_flops per image: forward + backward)."""
    plan = tiny_plans[0]["sft_step"]
    ratio = plan.compiled_flops / plan.analytic_flops
    assert abs(ratio - 1) < 0.10, f"compiled {plan.compiled_flops:.4g} vs analytic {plan.analytic_flops:.4g}"


@needs_libtpu
def test_plan_refuses_a_batch_that_does_not_split(capsys):
    from zoomiqa_jax.plan.cli import main

    code = main(["--config", "configs/sft_tiny.yaml", "--topology", TOPOLOGY, "data.batch_size=6"])
    err = capsys.readouterr().err
    assert code == 2
    assert "data.batch_size=6 is not divisible by data*fsdp=4" in err  # train.validate.validate_parallelism


@needs_libtpu
def test_plan_refuses_rollout_prompts_that_do_not_split(capsys):
    from zoomiqa_jax.plan.cli import main

    code = main(["--config", "configs/grpo_tiny.yaml", "--topology", TOPOLOGY, "data.batch_size=2",
                 "grpo.group_size=2"])
    assert code == 2
    assert "generate: data.batch_size=2 rollout prompts are not divisible by data*fsdp=4" in capsys.readouterr().err


@needs_libtpu
def test_plan_refuses_an_unknown_topology(capsys):
    from zoomiqa_jax.plan.cli import main

    assert main(["--config", "configs/sft_tiny.yaml", "--topology", "v5p:3x3x3x3"]) == 2
    assert "v5p:3x3x3x3" in capsys.readouterr().err
