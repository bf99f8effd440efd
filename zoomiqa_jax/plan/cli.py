"""`zoomiqa plan --config FILE --topology v5p:2x2x4 [key=value ...]`: will this run shard and fit on that TPU slice?

    zoomiqa plan --config configs/sft_qwen2_5_vl_3b.yaml --topology v5p:2x2x4 parallel.scan_layers=true
    zoomiqa plan --config configs/grpo_tiny.yaml --topology v5p:2x2x1

Compiles, on this machine and without any TPU, the programs the run would execute, with the config's mesh
(parallel.mesh over the slice's chips), logical-axis rules, remat policy and scan-over-layers switch, from abstract
shapes (nothing the size of the model is allocated): for an SFT config the SFT train step, for a GRPO config the
GRPO update step and the rollout generation program (prefill + decode loop). It needs libtpu, the TPU compiler
(`pip install "zoomiqa-jax[plan]"`, jax's tpu extra).

For each program it prints the per-chip memory of XLA's buffer assignment (arguments: parameters, optimizer state
and batch; outputs; temporaries: activations, gradients, workspace; aliased outputs reuse donated buffers), the
compiled FLOPs against the analytic count of zoomiqa_jax/train/flops.py, the compile time, and a verdict against
the chip's HBM (v4 32 GiB, v5e 16, v5p 95, v6e 32). The batch is the largest the run builds: data.batch_size rows
(GRPO: batch_size / mini_batches x group_size) of the largest sequence bucket, each with --images-per-row images
of --image pixels (default: the largest square image data.max_pixels allows). docs/scaling.md explains the numbers.

Exit status: 0 fits; 2 when it does not fit, cannot shard (the message names the key or axis) or the config or
topology is bad; --json writes every number to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from zoomiqa_jax.config import ConfigError

PROGRAMS = ("sft_step", "grpo_step", "generate")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `zoomiqa plan`."""
    p = argparse.ArgumentParser(prog="zoomiqa plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML run config (SFT or GRPO, see configs/README.md)")
    p.add_argument("--topology", required=True,
                   help="TPU slice as libtpu names it: <chip>:<shape>, e.g. v5p:2x2x4 (v5p-32), v5e:4x4, v6e:4x4")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. parallel.mesh=[1,-1,1] parallel.remat=full parallel.scan_layers=true")
    p.add_argument("--programs", default="",
                   help=f"comma-separated subset of {','.join(PROGRAMS)} (default: sft_step for an SFT config, "
                        "grpo_step,generate for a GRPO config)")
    p.add_argument("--images-per-row", type=int, default=2,
                   help="images in each training row (default 2: a crop round holds the image and its zoom; the "
                        "rollout's first round always has 1)")
    p.add_argument("--image", default="", metavar="HxW",
                   help="the images' size before smart_resize (default: the largest square data.max_pixels allows)")
    p.add_argument("--json", default="", metavar="FILE", help="also write the numbers as JSON to FILE")
    return p


def load_config(path: str, overrides: list[str]) -> tuple[Any, bool]:
    """(config, is_grpo): a GRPO config when the YAML file has a `grpo` or `rollout` section."""
    import yaml

    from zoomiqa_jax.train.config import load_train_config, resolve_path
    from zoomiqa_jax.train.grpo_config import load_grpo_config

    file = resolve_path(path)
    if not file.exists():
        raise ConfigError(f"--config {path}: no such file")
    data = yaml.safe_load(file.read_text()) or {}
    is_grpo = isinstance(data, dict) and bool({"grpo", "rollout"} & set(data))
    return (load_grpo_config(file, overrides) if is_grpo else load_train_config(file, overrides)), is_grpo


def check_parallelism(cfg: Any, n_chips: int, mesh_shape: dict[str, int], programs: list[str]) -> None:
    """Refuse (ConfigError naming the keys) what does not shard: `train.validate.validate_parallelism` (batch rows
    vs data x fsdp, model widths vs the axes the rules put them on, as `zoomiqa train` checks at start-up), and for
    the generation program its prompt rows (data.batch_size) vs data x fsdp."""
    from zoomiqa_jax.train.validate import validate_parallelism

    validate_parallelism(cfg, n_chips)
    ways = mesh_shape["data"] * mesh_shape["fsdp"]
    if "generate" in programs and cfg.data.batch_size % ways:
        raise ConfigError(f"generate: data.batch_size={cfg.data.batch_size} rollout prompts are not divisible by "
                          f"data*fsdp={ways} (parallel.mesh {list(cfg.parallel.mesh)} = {dict(mesh_shape)})")


def _gib(n: float) -> str:
    if n >= 1024**3:
        return f"{n / 1024**3:.2f} GiB"
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.1f} KiB"


def report_lines(topology: str, chip: Any, n_chips: int, mesh_shape: dict[str, int], cfg: Any, plans: list[Any]
                 ) -> list[str]:
    """The human-readable report."""
    p = cfg.parallel
    lines = [f"topology {topology}: {n_chips} x {chip.name} ({chip.hbm_bytes / 1024**3:.0f} GiB HBM per chip); "
             f"mesh {dict(mesh_shape)}; remat {p.remat}; scan_layers {p.scan_layers}; "
             f"dtype {cfg.model.dtype} / params {cfg.model.param_dtype}"]
    for plan in plans:
        lines += ["", f"{plan.name}: {plan.shape_note}; compiled in {plan.compile_s:.1f} s",
                  f"  per chip  arguments {_gib(plan.argument_bytes)}   outputs {_gib(plan.output_bytes)}   "
                  f"aliased {_gib(plan.alias_bytes)}",
                  f"            temporaries {_gib(plan.temp_bytes)}   code {_gib(plan.code_bytes)}   "
                  f"peak {_gib(plan.peak_bytes)} = {100 * plan.peak_bytes / chip.hbm_bytes:.1f}% of HBM"]
        flops = f"  FLOPs     compiled {plan.compiled_flops:.4g} (all chips)"
        if plan.analytic_flops:
            flops += f"   analytic {plan.analytic_flops:.4g}   ratio {plan.compiled_flops / plan.analytic_flops:.3f}"
        lines += [flops, f"            {plan.flops_note}"]
    return lines


def main(argv: list[str] | None = None) -> int:
    """`zoomiqa plan`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the target is the topology; this machine's devices are not used
    try:
        cfg, is_grpo = load_config(args.config, args.overrides)
        programs = [s for s in args.programs.split(",") if s] or (["grpo_step", "generate"] if is_grpo
                                                                 else ["sft_step"])
        unknown = [s for s in programs if s not in PROGRAMS or (s != "sft_step") != is_grpo]
        if unknown:
            raise ConfigError(f"--programs {args.programs}: {unknown} not available for this "
                              f"{'GRPO' if is_grpo else 'SFT'} config (choose from {PROGRAMS})")
        image_hw = None
        if args.image:
            try:
                image_hw = tuple(int(v) for v in args.image.lower().split("x"))
                assert len(image_hw) == 2 and min(image_hw) > 0
            except (ValueError, AssertionError):
                raise ConfigError(f"--image {args.image!r}: expected HxW, e.g. 1024x768") from None
        return run(cfg, is_grpo, args.topology, programs, args.images_per_row, image_hw, args.json)
    except ConfigError as err:
        print(f"zoomiqa plan: {err}", file=sys.stderr)
        return 2


def run(cfg: Any, is_grpo: bool, topology: str, programs: list[str], images_per_row: int,
        image_hw: tuple[int, int] | None, json_path: str = "") -> int:
    """Compile and report (module docstring); ConfigError for what the config or topology cannot do."""
    from zoomiqa_jax.parallel.mesh import make_mesh
    from zoomiqa_jax.plan import programs as progs
    from zoomiqa_jax.plan.topology import TopologyError, chip_of, topology_devices

    try:
        devices = topology_devices(topology)
        chip = chip_of(devices[0])
        try:
            mesh = make_mesh(cfg.parallel.mesh, devices=devices)
        except ValueError as err:
            raise ConfigError(f"parallel.mesh: {err} (topology {topology})") from None
        check_parallelism(cfg, len(devices), dict(mesh.shape), programs)
        builders = {"sft_step": lambda: progs.plan_sft(cfg, mesh, images_per_row, image_hw),
                    "grpo_step": lambda: progs.plan_grpo(cfg, mesh, images_per_row, image_hw),
                    "generate": lambda: progs.plan_generate(cfg, mesh, image_hw)}
        plans = [builders[name]() for name in programs]
    except (TopologyError, progs.PlanError) as err:
        raise ConfigError(str(err)) from None
    print("\n".join(report_lines(topology, chip, len(devices), dict(mesh.shape), cfg, plans)))
    fits, message = verdict(plans, chip)
    if json_path:
        Path(json_path).write_text(json.dumps({
            "topology": topology, "chip": chip.name, "hbm_bytes": chip.hbm_bytes, "chips": len(devices),
            "mesh": dict(mesh.shape), "remat": cfg.parallel.remat, "scan_layers": cfg.parallel.scan_layers,
            "programs": [dict(vars(p), peak_bytes=p.peak_bytes) for p in plans], "fits": fits}, indent=1))
    print(f"\n{message}", file=sys.stdout if fits else sys.stderr)
    return 0 if fits else 2


def verdict(plans: list[Any], chip: Any) -> tuple[bool, str]:
    """(fits, one line): every program's per-chip peak within the chip's HBM, else the largest one named."""
    too_big = [p for p in plans if p.peak_bytes > chip.hbm_bytes]
    if too_big:
        worst = max(too_big, key=lambda p: p.peak_bytes)
        return False, (f"verdict: does NOT fit: {worst.name} needs {_gib(worst.peak_bytes)} per chip, a {chip.name} "
                       f"chip has {_gib(chip.hbm_bytes)} (try parallel.remat, parallel.scan_layers, a smaller "
                       "data.batch_size or sequence bucket, more fsdp, or a larger slice)")
    peak = max(p.peak_bytes for p in plans)
    share = 100 * peak / chip.hbm_bytes
    return True, f"verdict: fits: at most {_gib(peak)} of {_gib(chip.hbm_bytes)} per chip ({share:.1f}%)"


if __name__ == "__main__":
    sys.exit(main())
