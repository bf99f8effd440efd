"""report.md and plots of an evaluation run, beside the papers' published PLCC / SRCC.

Published rows (PLCC / SRCC, models trained on KonIQ, tested on each set), copied from the papers:

* arXiv:2601.02918 (Zoom-IQA) Table 1: the "Zoom-IQA (Ours)", "Q-Insight [29]" and "VisualQuality-R1 [67]" rows;
* arXiv:2503.22679 (Q-Insight) Table 2: the "Q-Insight (Ours)" row (it differs from Zoom-IQA's Table 1 copy of it);
* arXiv:2503.22679 Table 3 (degradation perception): the "AgenticIR [74]" and "Q-Insight (Ours)" rows of distortion
  class accuracy (Deg. Acc.) and level accuracy (Lev. Acc.) per class; "Average" is the mean over the classes
  (five for Deg. Acc., four for Lev. Acc.: "null" has no level), as `degradation_accuracy`'s macro means.

`set_metrics` turns one dataset's prediction rows into the numbers of metrics.json. The report's columns
follow the papers' order: KonIQ, SPAQ, KADID, PIPAL, LiveW, AGIQA, CSIQ; a dataset of the run with another
name gets a column of its own after them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PAPER_COLUMNS = ("koniq", "spaq", "kadid", "pipal", "livew", "agiqa", "csiq")
COLUMN_TITLES = {"koniq": "KonIQ", "spaq": "SPAQ", "kadid": "KADID", "pipal": "PIPAL", "livew": "LiveW",
                 "agiqa": "AGIQA", "csiq": "CSIQ"}
ALIASES = {"koniq10k": "koniq", "kadid10k": "kadid", "live_wild": "livew", "livewild": "livew", "livec": "livew",
           "live_challenge": "livew", "agiqa3k": "agiqa", "agiqa_3k": "agiqa"}

# (row label, source) -> {column: (PLCC, SRCC)}
PUBLISHED: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("Zoom-IQA", "arXiv:2601.02918 Table 1"): {
        "koniq": (0.938, 0.922), "spaq": (0.902, 0.900), "kadid": (0.701, 0.700), "pipal": (0.468, 0.465),
        "livew": (0.887, 0.870), "agiqa": (0.816, 0.765), "csiq": (0.797, 0.754)},
    ("Q-Insight", "arXiv:2601.02918 Table 1"): {
        "koniq": (0.918, 0.895), "spaq": (0.903, 0.903), "kadid": (0.702, 0.702), "pipal": (0.458, 0.435),
        "livew": (0.870, 0.839), "agiqa": (0.816, 0.766), "csiq": (0.685, 0.640)},
    ("VisualQuality-R1", "arXiv:2601.02918 Table 1"): {
        "koniq": (0.910, 0.896), "spaq": (0.889, 0.892), "kadid": (0.703, 0.712), "pipal": (0.451, 0.441),
        "livew": (0.856, 0.827), "agiqa": (0.817, 0.760), "csiq": (0.768, 0.707)},
    ("Q-Insight", "arXiv:2503.22679 Table 2"): {
        "koniq": (0.933, 0.916), "spaq": (0.907, 0.905), "kadid": (0.742, 0.736), "pipal": (0.486, 0.474),
        "livew": (0.893, 0.865), "agiqa": (0.811, 0.764), "csiq": (0.870, 0.824)},
}

DEGRADATION_COLUMNS = ("noise", "blur", "compression", "darken", "null")
DEGRADATION_TITLES = {"noise": "Noise", "blur": "Blur", "compression": "JPEG", "darken": "Darken", "null": "Null"}

# (row label, source) -> {"class" | "level": (noise, blur, jpeg, darken, null, average)}; None: "-" in the paper
PUBLISHED_DEGRADATION: dict[tuple[str, str], dict[str, tuple[float | None, ...]]] = {
    ("AgenticIR", "arXiv:2503.22679 Table 3"): {
        "class": (0.4646, 0.8390, 0.0135, 0.7478, 0.9339, 0.5998),
        "level": (0.1858, 0.3219, 0.0000, 0.2611, None, 0.1922)},
    ("Q-Insight", "arXiv:2503.22679 Table 3"): {
        "class": (1.0000, 0.9756, 1.0000, 0.9027, 0.7603, 0.9277),
        "level": (0.5973, 0.4438, 0.5541, 0.3230, None, 0.4796)},
}


def set_metrics(rows: Sequence[dict[str, Any]], task: str, bad_labels: int = 0) -> dict[str, Any]:
    """Metrics of one dataset's prediction rows (predictions.jsonl lines).

    Invalid rows are counted by class and excluded from the correlations (never given a score): valid-format
    rate, crop rate and mean extra rounds (over the items the model saw), token-limit hits, and either
    `score_metrics` (PLCC / SRCC / KRCC / RMSE raw, isotonic and logistic, unique-score ratio) or, for the
    Q-Insight degradation task, `degradation_accuracy` (arXiv:2503.22679 Table 3).
    """
    from collections import Counter

    from zoomiqa_jax.eval.metrics import degradation_accuracy, score_metrics

    n = len(rows)
    invalid = Counter(r["invalid"] for r in rows if r["invalid"] is not None)
    ran = [r for r in rows if r["rounds"] > 0]
    out: dict[str, Any] = {
        "n": n, "n_bad_labels": bad_labels, "n_valid": n - sum(invalid.values()),
        "valid_rate": (n - sum(invalid.values())) / n if n else None,
        "invalid_by_class": dict(sorted(invalid.items())),
        "crop_rate": sum(r["zoomed"] for r in ran) / len(ran) if ran else None,
        "mean_extra_rounds": float(np.mean([r["rounds"] - 1 for r in ran])) if ran else None,
        "n_hit_token_limit": sum(bool(r["hit_token_limit"]) for r in rows),
    }
    if task == "qinsight_degradation":
        out["degradation"] = degradation_accuracy(
            [r.get("pred_class") for r in rows], [r.get("pred_level") for r in rows],
            [r.get("distortion_class") for r in rows], [r.get("severity") for r in rows]).to_dict()
    else:
        out["scores"] = score_metrics([r["pred"] for r in rows], [r["mos"] for r in rows]).to_dict()
    return out


def column_of(name: str) -> str:
    """The paper column a dataset name belongs to ("KonIQ-10k" -> "koniq"), else the name itself."""
    key = name.lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, ALIASES.get(key.replace("_", ""), key))
    for col in PAPER_COLUMNS:
        if key.startswith(col):
            return col
    return name


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def score_table(datasets: dict[str, Any], style: str = "raw") -> list[str]:
    """Markdown rows: our PLCC / SRCC per column (style "raw" or "isotonic") above the published rows."""
    ours = {column_of(name): m.get("scores") or {} for name, m in datasets.items()}
    columns = list(PAPER_COLUMNS) + [c for c in ours if c not in PAPER_COLUMNS]
    head = "| model | source | " + " | ".join(COLUMN_TITLES.get(c, c) for c in columns) + " |"
    lines = [head, "| --- | --- |" + " ---: |" * len(columns)]
    suffix = "" if style == "raw" else "_isotonic"
    cells = []
    for c in columns:
        s = ours.get(c)
        cells.append("" if s is None else f"{_f(s.get('plcc' + suffix))} / {_f(s.get('srcc' + suffix))}")
    lines.append(f"| this run ({style}) | metrics.json | " + " | ".join(cells) + " |")
    for (label, source), row in PUBLISHED.items():
        vals = [f"{row[c][0]:.3f} / {row[c][1]:.3f}" if c in row else "" for c in columns]
        lines.append(f"| {label} | {source} | " + " | ".join(vals) + " |")
    return lines


def degradation_table(datasets: dict[str, Any]) -> list[str]:
    """Markdown rows in arXiv:2503.22679 Table 3's layout: per class Deg. Acc. and Lev. Acc. of each dataset of the
    run (a class absent from a dataset is blank), then the published rows."""
    head = "| model | source | metric | " + " | ".join(DEGRADATION_TITLES[c] for c in DEGRADATION_COLUMNS)
    lines = [head + " | Average |", "| --- | --- | --- |" + " ---: |" * (len(DEGRADATION_COLUMNS) + 1)]
    for name, m in datasets.items():
        d = m.get("degradation")
        if not d:
            continue
        for metric, key, mean in (("Deg. Acc.", "class_acc", "mean_class_acc"),
                                  ("Lev. Acc.", "level_acc", "mean_level_acc")):
            cells = []
            for c in DEGRADATION_COLUMNS:
                acc = d["per_class"].get(c)
                cells.append("" if acc is None else ("-" if acc[key] is None else f"{acc[key]:.4f}"))
            lines.append(f"| this run: {name} (n={d['n']}) | metrics.json | {metric} | " + " | ".join(cells)
                         + f" | {_f(d[mean], 4)} |")
    for (label, source), row in PUBLISHED_DEGRADATION.items():
        for metric, key in (("Deg. Acc.", "class"), ("Lev. Acc.", "level")):
            lines.append(f"| {label} | {source} | {metric} | " + " | ".join(_f(v, 4) if v is not None else "-"
                                                                            for v in row[key]) + " |")
    return lines


def dataset_section(name: str, m: dict[str, Any], plots: Sequence[str]) -> list[str]:
    """Per-dataset details: validity, invalid classes, crops, rounds, token limit, extra metrics, plots."""
    invalid = ", ".join(f"{k}: {v}" for k, v in m["invalid_by_class"].items()) or "none"
    lines = [f"### {name}", "",
             f"- items: {m['n']} predicted ({m.get('n_run_now', 0)} in the last call), "
             f"{m.get('n_missing', 0)} not yet predicted (other shards), bad label records: {m['n_bad_labels']}",
             f"- valid format: {_pct(m['valid_rate'])} ({m['n_valid']} of {m['n']}); invalid by class: {invalid} "
             "(excluded from the metrics, never given a score)",
             f"- crop rate: {_pct(m['crop_rate'])}, mean extra rounds: {_f(m['mean_extra_rounds'])}, "
             f"outputs that hit the token limit: {m['n_hit_token_limit']}"]
    s = m.get("scores")
    if s:
        up, um = s["unique_ratio_pred"]["ratio"], s["unique_ratio_mos"]["ratio"]
        lines += [f"- PLCC / SRCC / KRCC / RMSE: {_f(s['plcc'])} / {_f(s['srcc'])} / {_f(s['krcc'])} / "
                  f"{_f(s['rmse'])}; isotonic PLCC / SRCC: {_f(s['plcc_isotonic'])} / {_f(s['srcc_isotonic'])}; "
                  f"logistic PLCC: {_f(s['plcc_logistic'])} ({s['logistic']['status']}); status: {s['status']}",
                  f"- unique-score ratio: predictions {_pct(up)}, MOS {_pct(um)} "
                  "(arXiv:2601.02918 Sec. 3.2: 2.04% collapsed model vs 71.34% KonIQ MOS)"]
    d = m.get("degradation")
    if d:
        lines += [f"- degradation accuracy (arXiv:2503.22679 Table 3): class {_pct(d['mean_class_acc'])}, level "
                  f"{_pct(d['mean_level_acc'])} (macro); invalid predictions {d['n_invalid_pred']}", "",
                  "| class | n | class acc. | level acc. |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {c} | {a['n']} | {_pct(a['class_acc'])} | {_pct(a['level_acc'])} |"
                  for c, a in d["per_class"].items()]
    lines += [""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return lines


def plot_dataset(plot_dir: Path, name: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Scatter of prediction vs MOS and histogram of predicted vs true scores (PNG); returns relative paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    mos = np.asarray([r["mos"] for r in rows], np.float64)
    pred = np.asarray([np.nan if r["pred"] is None else r["pred"] for r in rows], np.float64)
    ok = np.isfinite(pred) & np.isfinite(mos)
    paths = []
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(mos[ok], pred[ok], s=10, alpha=0.6)
    ax.set(xlabel="MOS", ylabel="prediction", title=f"{name}: {ok.sum()} valid of {len(rows)}")
    fig.tight_layout()
    fig.savefig(plot_dir / f"{safe}_scatter.png", dpi=100)
    plt.close(fig)
    paths.append(f"plots/{safe}_scatter.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    finite_mos = mos[np.isfinite(mos)]
    values = np.concatenate([finite_mos, pred[np.isfinite(pred)]])
    bins = np.linspace(values.min(), values.max() + 1e-6, 21) if values.size else 20
    ax.hist(finite_mos, bins=bins, alpha=0.5, label="MOS")
    ax.hist(pred[np.isfinite(pred)], bins=bins, alpha=0.5, label="predicted")
    ax.set(xlabel="score", ylabel="count", title=name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_dir / f"{safe}_hist.png", dpi=100)
    plt.close(fig)
    paths.append(f"plots/{safe}_hist.png")
    return paths


def write_report(out: Path, summary: dict[str, Any], predictions: dict[str, list[dict[str, Any]]],
                 config: dict[str, Any]) -> Path:
    """Write out/report.md and out/plots/*.png; returns the report path."""
    datasets = summary["datasets"]
    ckpt = config["checkpoint"]
    ckpt = ckpt.get("path") if isinstance(ckpt, dict) else ckpt
    lines = ["# zoomiqa eval", "", f"checkpoint `{ckpt}`, task `{config['task']}`, "
             f"config hash `{summary['config_hash']}` (run_config.json), sampling {config['sampling']}", ""]
    if summary["task"] != "qinsight_degradation":
        lines += ["## PLCC / SRCC", "", "Raw correlations, the published rows below (trained on KonIQ):", ""]
        lines += score_table(datasets, "raw")
        lines += ["", "After the monotonic isotonic fit of predictions to MOS (the Zoom-IQA authors' evaluation):", ""]
        lines += score_table(datasets, "isotonic")
        lines.append("")
    else:
        lines += ["## Degradation perception (arXiv:2503.22679 Table 3)", "",
                  "Class accuracy (Deg. Acc., Eq. 4) and level accuracy (Lev. Acc., Eq. 5: class and level both "
                  "right) per true distortion class; invalid answers count as wrong. JPEG is the prompt's "
                  "\"compression\". Published rows from arXiv:2503.22679 Table 3 (DQ-495K test images, not "
                  "this set):", ""]
        lines += degradation_table(datasets)
        lines.append("")
    lines += ["## Per dataset", ""]
    for name, m in datasets.items():
        plots = plot_dataset(out / "plots", name, predictions.get(name, [])) if summary["task"] != \
            "qinsight_degradation" else []
        lines += dataset_section(name, m, plots)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
