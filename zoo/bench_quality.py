"""`zoo bench quality` and `zoo bench distill`: which one-shot choices and which distillation losses
keep a compressed model's accuracy, measured in one run.

For one task of a matrix profile, from its dense teacher: the pruning criteria at each sparsity
(magnitude, Wanda and movement scorers through the one mask code, and OBS), and layer keep-lists
(given ones and the data-chosen one), each scored right after the one-shot change (0 steps) and
after the recovery budget (distilling from the teacher); movement, whose scores come from
training, prunes gradually over the first half of the budget and has no 0-step row; or the
distillation options on a 3-layer, a half-width and an 80%-sparse student. Every variant is scored on the same
dev examples as the teacher, re-scored in the same run.
Each variant is a run folder under `--root`, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from rich.progress import Progress
from transformers import AutoConfig

from zoo import pipeline, provenance
from zoo.errors import ZooError
from zoo.io import matches, write_json
from zoo.matrix import MatrixProfile, changes_in_run, load_matrix, teacher_dir
from zoo.recipe import parse_recipe
from zoo.record import Record, find_record, metric_names


class Variant(NamedTuple):
    modifiers: list[dict]
    steps: int  # recovery steps
    train: dict = {}  # the training settings the matrix gives a cell of this setting (cell_train_by), e.g. its learning rate


def _cell_settings(matrix: MatrixProfile, **setting) -> dict:
    """cell_train_by's settings for a cell with this setting, except its step count: the
    benchmark gives every variant of one kind the same number of steps."""
    return {k: v for k, v in matrix.overrides(**setting).items() if k != "max_steps"}


PRUNING_METHODS = ("magnitude", "wanda", "movement", "obs")
METHODS = (*PRUNING_METHODS, "layers")


def variants(sparsities: list[float], keep_lists: list[list[int]], keep_n: int, steps: int, layer_steps: int, matrix: MatrixProfile,
             methods: tuple[str, ...] = METHODS) -> dict[str, Variant]:
    """Pruning settings other than the sparsity come from the matrix profile (scope, calibration
    size, OBS solver and rounds); magnitude and Wanda prune one-shot at step 0, movement on the
    cubic schedule over the first half of the steps (a mask every 5 steps; the last at step 1 at the earliest)."""
    kd = lambda **setting: [{"type": "distillation", "teacher": "{teacher}", **matrix.distillation_for(**setting)}]  # noqa: E731
    obs_settings = _obs_settings(matrix)
    scope, calibration = obs_settings.get("scope", "uniform"), obs_settings.get("calibration_examples", 128)
    out = {"teacher": Variant([], 0)}
    for s in sparsities:
        pct, train = round(s * 100), _cell_settings(matrix, sparsity=s)
        one_shot = {"type": "magnitude_pruning", "final_sparsity": s, "start": 0.0, "end": 0.0}
        pruning = {"magnitude": {**one_shot, "scope": scope},
                   "wanda": {**one_shot, "scorer": "wanda", "calibration_examples": calibration},  # Wanda compares within rows: uniform
                   "movement": {**one_shot, "scorer": "movement", "scope": scope, "unit": "step", "end": max(1, steps // 2), "update_every": 5},
                   "obs": {"type": "obs_pruning", **obs_settings, "final_sparsity": s}}
        for method in (m for m in PRUNING_METHODS if m in methods):
            if method != "movement":
                out[f"{method}-s{pct}-0steps"] = Variant([pruning[method]], 0)
            out[f"{method}-s{pct}-{steps}steps-kd"] = Variant([pruning[method], *kd(sparsity=s)], steps, train)
    if "layers" in methods:
        drops = {"-".join(map(str, keep)): {"type": "layer_drop", "keep": keep} for keep in keep_lists}
        drops["search"] = {"type": "layer_drop", "strategy": "search", "n": keep_n}
        for label, modifier in drops.items():
            out[f"layers-{label}-0steps"] = Variant([modifier], 0)
            out[f"layers-{label}-{layer_steps}steps-kd"] = Variant([modifier, *kd(layers=keep_n)], layer_steps, _cell_settings(matrix, layers=keep_n))
    # the minutes-cheap one-shot rows first (in order), so an interrupted run has every one of them
    return dict(sorted(out.items(), key=lambda item: item[1].steps > 0))


def _obs_settings(matrix: MatrixProfile) -> dict:
    """The matrix's pruning settings an OBS variant takes (less the GMP-only keys)."""
    return {k: v for k, v in matrix.pruning.items() if k not in ("type", "start", "update_every", "init_sparsity")}


def distillation_variants(layers: int, width: float, sparsity: float, steps: int, layer_steps: int, width_steps: int,
                          matrix: MatrixProfile) -> dict[str, Variant]:
    """The matrix's distillation (logits + hidden states) on a layer-dropped, a width-pruned and
    a sparse (OBS) student, alone and with each seed distillation option added (TinyBERT
    embedding MSE and two-step schedule, Patient-KD [CLS] loss, BERT-of-Theseus module
    replacement; MiniLM attention/value relations on all three), and the width student with
    retraining-free mask tuning (zoo/mask_tuning.py) on the batches its importance was scored
    on, at 0 steps and before the same distillation. Option weights are the example recipes'
    (recipes/examples/)."""
    kd = {"type": "distillation", "teacher": "{teacher}", **matrix.distillation}
    minilm = {**kd, "attention_relation": 1.0, "value_relation": 1.0}
    sparse = {"type": "obs_pruning", **_obs_settings(matrix), "final_sparsity": sparsity}
    drop = {"type": "layer_drop", "strategy": "search", "n": layers}
    narrow = {"type": "width_pruning", "width": width, **{k: v for k, v in matrix.width_pruning.items() if k != "mask_tuning_examples"}}
    tuned = {**narrow, "mask_tuning_examples": narrow.get("calibration_examples", 256)}  # the importance batches (256: the field's default)
    theseus = {"type": "theseus", "predecessor": "{teacher}", "replace_rate_start": 0.5, "end": 0.5}
    d, w, sp = f"layers{layers}", f"width{round(width * 100)}", f"s{round(sparsity * 100)}"
    layer_train, width_train, sparse_train = (_cell_settings(matrix, layers=layers), _cell_settings(matrix, width=width),
                                              _cell_settings(matrix, sparsity=sparsity))
    return {
        "teacher": Variant([], 0),
        f"{d}-kd": Variant([drop, kd], layer_steps, layer_train),
        f"{d}-kd-embedding": Variant([drop, {**kd, "embedding_mse": 1.0}], layer_steps, layer_train),
        f"{d}-kd-two-step": Variant([drop, {**kd, "embedding_mse": 1.0, "two_step": True, "intermediate_fraction": 0.3}], layer_steps, layer_train),
        f"{d}-kd-pkd": Variant([drop, {**kd, "pkd_cls": 100.0}], layer_steps, layer_train),
        # predecessor layers run in the student's place, so only the logits are distilled
        f"{d}-kd-theseus": Variant([drop, theseus, {**kd, "hidden_mse": 0.0}], layer_steps, layer_train),
        f"{d}-kd-minilm": Variant([drop, minilm], layer_steps, layer_train),
        f"{w}-kd": Variant([narrow, kd], width_steps, width_train),
        f"{w}-kd-minilm": Variant([narrow, minilm], width_steps, width_train),
        f"{w}-0steps": Variant([narrow], 0),
        f"{w}-mask-tuned-0steps": Variant([tuned], 0),
        f"{w}-mask-tuned-kd": Variant([tuned, kd], width_steps, width_train),
        f"{sp}-kd": Variant([sparse, kd], steps, sparse_train),
        f"{sp}-kd-minilm": Variant([sparse, minilm], steps, sparse_train),
    }


def quality(family: str, profile_name: str, steps: int, eval_examples: int | None, sparsities: list[float], keep_lists: list[list[int]],
            root: Path, output: Path, progress: Progress, data_dir: str | None = None, matrix_file: str | None = None,
            methods: list[str] | None = None) -> dict:
    methods = tuple(dict.fromkeys(methods or METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ZooError(f"--methods {unknown[0]}: no such method; choose from {' '.join(METHODS)}")
    matrix, source = load_matrix(family, profile_name, matrix_file)
    lengths = {len(k) for k in keep_lists}
    if len(lengths) != 1:
        raise ZooError(f"--keep lists must all keep the same number of layers, got {sorted(lengths)}")
    keep_n = lengths.pop()
    base_layers = _base_layers(matrix, family, profile_name)
    layer_steps = round(steps * base_layers / keep_n)  # the matrix's budget rule: a cheaper step buys more steps
    planned = variants(sparsities, keep_lists, keep_n, steps, layer_steps, matrix, methods)
    return run_variants("quality", matrix, source, profile_name, planned, {"steps": steps, "layer_steps": layer_steps, "methods": list(methods)},
                        "pruning criteria (magnitude, Wanda, movement, OBS) and layer keep-lists, 0 and N recovery steps, vs the teacher",
                        root, output, progress, eval_examples, data_dir)


def distillation(family: str, profile_name: str, steps: int, eval_examples: int | None, layers: int, width: float, sparsity: float,
                 root: Path, output: Path, progress: Progress, data_dir: str | None = None, matrix_file: str | None = None,
                 only: list[str] | None = None) -> dict:
    """`only`: names or globs of the variants to run (the teacher always runs)."""
    matrix, source = load_matrix(family, profile_name, matrix_file)
    base_layers = _base_layers(matrix, family, profile_name)
    layer_steps, width_steps = round(steps * base_layers / layers), round(steps / width)  # the matrix's budget rule
    planned = distillation_variants(layers, width, sparsity, steps, layer_steps, width_steps, matrix)
    if only:
        unmatched = [p for p in only if not any(matches(n, [p]) for n in planned)]
        if unmatched:
            raise ZooError(f"--variants {unmatched[0]}: matches no variant; choose from {' '.join(list(planned)[1:])}")
        planned = {n: v for n, v in planned.items() if n == "teacher" or matches(n, only)}
    return run_variants("distill", matrix, source, profile_name, planned, {"steps": steps, "layer_steps": layer_steps, "width_steps": width_steps},
                        "distillation options on a layer-dropped, a width-pruned and a sparse student, vs the matrix's distillation alone",
                        root, output, progress, eval_examples, data_dir)


def _base_layers(matrix, family: str, profile_name: str) -> int:
    teacher = teacher_dir(matrix, next(iter(matrix.tasks)))
    if not find_record(teacher):
        raise ZooError(f"{teacher} has no metrics.json: train the teacher first (zoo matrix {family} --profile {profile_name} builds it)")
    return AutoConfig.from_pretrained(str(teacher)).num_hidden_layers


def run_variants(benchmark: str, matrix: MatrixProfile, source: Path, profile_name: str, planned: dict[str, Variant], budget: dict, what: str,
                 root: Path, output: Path, progress: Progress, eval_examples: int | None, data_dir: str | None) -> dict:
    """Train and score every planned variant of the matrix's first task from its teacher, with the
    matrix's cell training settings (and the variant's own) for the variant's steps; "{teacher}"
    in a modifier is the teacher's folder. A variant that ran with other settings runs again."""
    task, model = next(iter(matrix.tasks.items()))
    teacher = str(teacher_dir(matrix, task))
    metric = metric_names(task)[0]
    settings = {"matrix": str(source), "profile": profile_name, "task": task, "base_model": model, "teacher": teacher,
                "eval_examples": eval_examples, **budget, "cell_train": matrix.cell_train.model_dump(),
                "distillation": matrix.distillation, "pruning": matrix.pruning,
                "variants": {name: variant._asdict() for name, variant in planned.items()}}
    rows: dict[str, dict] = {}
    for name, variant in planned.items():
        folder = root / name
        train = matrix.cell_train.model_copy(update={**variant.train, "max_steps": variant.steps})
        resolved = [{k: teacher if v == "{teacher}" else v for k, v in m.items()} for m in variant.modifiers]
        recipe = parse_recipe({"modifiers": resolved}, f"bench variant ({name})")
        record = find_record(folder)
        changed = record and changes_in_run(record, recipe, train, eval_examples)
        if changed:
            progress.console.print(f"{name}: re-running, its settings changed since it ran ({'; '.join(changed)})")
        if record is None or changed:
            run = pipeline.open_run(task, teacher, matrix.finetune_profile, data_dir)
            run.profile = run.profile.model_copy(update={"train": train})
            record = pipeline.finetune(run, folder, progress, eval_examples, recipe=recipe)
        rows[name] = _row(record, metric, rows.get("teacher", {}).get(metric))
        # Rewritten after every variant, so an interrupted run still leaves what it measured.
        write_json(output, {"benchmark": benchmark, "complete": len(rows) == len(planned),
                            "what": f"{task}: {what}", "settings": settings, "results": rows, "provenance": provenance.collect()})
    return json.loads(output.read_text())


def _row(record: Record, metric: str, teacher_score: float | None) -> dict:
    compression, score = record.compression, record.metrics[metric]
    se = record.metrics.get(f"{metric}_se")  # adapters that report no standard error: null, not NaN (invalid JSON)
    row = {"steps": record.train.steps, metric: round(score, 2), f"{metric}_se": None if se is None else round(se, 2),
           # the first row is the teacher itself; a teacher scoring 0 gives no ratio
           "retention_pct": 100.0 if teacher_score is None else round(100 * score / teacher_score, 1) if teacher_score else None,
           "measured_sparsity": round(record.measured_sparsity, 4),
           "layers_kept": compression.layers_kept,
           "obs_seconds": sum(r["seconds"] for r in (compression.obs_pruning or {}).get("rounds", [])) or None,
           "train_seconds": record.train.seconds}
    if compression.layer_search:
        row["layer_search"] = compression.layer_search
    return row
