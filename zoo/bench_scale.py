"""The full profile's code path at its real model shape, measured against its resource plan.

`zoo bench scale` runs selected cells of a matrix profile (by default the SQuAD `full` profile
on a random-weight bert-base: its shape needs no download) for a few steps on a slice of the
data, then sets each run's measurements beside what the plan (zoo/plan.py) predicted for it:
peak host RSS, peak accelerator memory, teacher-cache bytes, and the step time. Written to
results/bench/scale-FAMILY-PROFILE-DEVICE.{json,md} with the machine it ran on.
"""

from __future__ import annotations

from pathlib import Path

from zoo import matrix, provenance
from zoo.io import write_json, write_text
from zoo.plan import GB
from zoo.record import find_record

# (measured key, plan key) pairs compared as measured / planned
COMPARED = (("peak_host_rss_bytes", "host_ram_bytes"), ("peak_accelerator_bytes", "accelerator_bytes"), ("cache_bytes", "cache_bytes"))


def measured(record) -> dict:
    """What one finished run's record says it used."""
    resources = record.model_extra.get("resources") or {}
    cache = record.compression.teacher_cache if record.compression else {}
    train = record.train
    return {**resources,
            "teacher": cache.get("source"), "teacher_why": cache.get("why"),
            "cache_bytes": cache.get("bytes", 0) if cache.get("hit") is False else 0,  # a cache this run built
            "train_steps": train.steps if train else 0,
            "seconds_per_step": round(train.seconds / train.steps, 4) if train and train.steps else None,
            "metrics": record.metrics}


def run(family: str, profile: str, overrides: matrix.Overrides, patterns: list[str], root: Path, output: Path, progress,
        data_dir: str | None = None, matrix_file: str | None = None) -> dict:
    started = provenance.collect()  # the code that ran: the records' commit, not one made while it ran
    result = matrix.run(family, profile, progress, matrix_file=matrix_file, data_dir=data_dir, root=str(root), patterns=patterns,
                        overrides=overrides)
    plan = result["plan"]
    rows = []
    for planned in plan["cells"]:
        name = planned["cell"]
        folder = Path(result["teachers"][name[len("teacher ("):-1]]["folder"]) if name.startswith("teacher (") else root / name
        record = find_record(folder)
        if record is None:  # never ran (a teacher given ready-made)
            continue
        seen = measured(record)
        ratios = {m: round(seen[m] / planned[p], 3) for m, p in COMPARED if seen.get(m) and planned.get(p)}
        rows.append({"cell": name, "folder": str(folder), "plan": planned, "measured": seen, "measured_over_plan": ratios})
    report = {"benchmark": "scale", "family": family, "profile": profile, "overrides": overrides.__dict__, "device": plan["device"],
              "data": plan["data"], "plan_totals": plan["totals"], "rows": rows, "provenance": started}
    write_json(output, report)
    write_text(output.with_suffix(".md"), markdown(report))
    return report


def markdown(report: dict) -> str:
    gb = lambda value: "" if value is None else f"{value / GB:.2f}"  # noqa: E731
    lines = [provenance.header("Measured by", [report["provenance"]]), "",
             f"Profile `{report['profile']}` with {', '.join(f'{k} {v}' for k, v in report['overrides'].items() if v is not None)}; "
             f"cells on {report['device']}. Ratios are measured / planned (zoo/plan.py).", "",
             "| run | teacher | cache GB plan / measured | host RSS GB plan / measured (at start) | accelerator GB plan / measured | s / step | steps |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["rows"]:
        plan, seen = row["plan"], row["measured"]
        lines.append(f"| {row['cell']} | {seen['teacher'] or ''} | {gb(plan['cache_bytes'])} / {gb(seen['cache_bytes'])} | "
                     f"{gb(plan['host_ram_bytes'])} / {gb(seen.get('peak_host_rss_bytes'))} ({gb(seen.get('host_rss_at_start_bytes'))}) | "
                     f"{gb(plan['accelerator_bytes'])} / {gb(seen.get('peak_accelerator_bytes'))} | "
                     f"{seen['seconds_per_step'] or ''} | {seen['train_steps']} |")
    return "\n".join(lines) + "\n"
