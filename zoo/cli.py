"""`zoo` command line. Errors the user can fix print one line and exit 2 (--debug: traceback)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from zoo import cli_args, paths
from zoo.cli_args import (
    checkpoint_folder,
    examples,
    existing_file,
    fraction,
    kept_fraction,
    optional_file,
    output_file,
    output_folder,
    port,
    positive_float,
    positive_int,
    whole_number,
)
from zoo.errors import ZooError

console = Console(stderr=True)
DENSE_SQUAD = str(paths.run_dir("squad", "dense-cpu"))  # what `make squad` trains: the benchmarks' default model


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
    )


def _eval_limit(value: int | str | None, default: int | None) -> int | None:
    """--eval-examples (parsed by cli_args.examples): None the default, 'all' no limit."""
    return default if value is None else None if value == "all" else value


def _summary(record, run_dir: Path) -> None:
    table = Table(title=f"{record.task} · {record.model} · profile {record.finetune_profile}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in record.metrics.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    if record.train:
        table.add_row("train examples / features", f"{record.train.examples} / {record.train.features}")
        table.add_row("train steps", str(record.train.steps))
    for phase, seconds in record.timings_s.items():
        table.add_row(f"time {phase}", f"{seconds:.1f} s")
    table.add_row("run folder", str(run_dir))
    Console().print(table)


def cmd_run(args: argparse.Namespace) -> None:
    from zoo import launch, pipeline

    launch.check_processes()  # fewer processes than the launch asked for: said before any work
    run = pipeline.open_run(args.task, args.model, args.profile, args.data_dir)
    eval_limit = _eval_limit(args.eval_examples, run.profile.eval.max_examples)
    default_name = f"{Path(args.model).name if args.command == 'finetune' else 'eval'}-{args.profile}"
    run_dir = Path(args.output or paths.run_dir(args.task, default_name))
    with _progress() as progress:
        if args.command == "finetune":
            from zoo.recipe import load_recipe

            recipe = load_recipe(args.recipe) if args.recipe else None
            overrides = {k: v for k, v in (("max_steps", args.max_steps), ("max_examples", args.train_examples)) if v is not None}
            if overrides:  # e.g. the full profile's code path for a few steps on a slice (a smoke run)
                run.profile = run.profile.model_copy(update={"train": run.profile.train.model_copy(update=overrides)})
            record = pipeline.finetune(run, run_dir, progress, eval_limit, recipe=recipe)
        else:
            record = pipeline.evaluate(run, run_dir, progress, eval_limit)
    if record:  # None: a process of a distributed launch other than the main one, which reports nothing
        _summary(record, run_dir)


def cmd_bench_train(args: argparse.Namespace) -> None:
    from zoo import bench

    common = (args.model, args.data_dir, args.steps, args.warmup_steps, args.batch_size, args.max_seq_length, args.doc_stride)
    with _progress() as progress:
        if args.compare == "padding":
            result = bench.train_throughput(*common, args.output or str(paths.BENCH / "train-throughput.json"), progress)
        else:
            result = bench.train_compare(args.compare, *common, args.output or str(paths.BENCH / f"train-{args.compare}-cpu.json"),
                                         progress, args.rounds)
    shown = {"results": result["results"]} if args.compare == "padding" else {}  # the others: per-step losses of every round, in the JSON
    Console().print_json(data={**shown, "comparison": result["comparison"]})


def _executor(args: argparse.Namespace):
    from zoo.executor import LocalExecutor, RayExecutor, import_ray

    if args.executor == "local":
        if args.address or args.workers:
            raise ZooError("--address and --workers apply to --executor ray; add --executor ray or leave them out")
        return LocalExecutor()
    import_ray()  # missing Ray: the one-line error now, not after the teachers have trained
    return RayExecutor(args.address, args.workers)


def _overrides(args: argparse.Namespace):
    """The matrix-profile changes given on the command line (zoo matrix, zoo bench scale)."""
    from zoo.matrix import Overrides

    return Overrides(args.model, args.train_examples, args.eval_examples, args.max_steps, args.batch_size)


def cmd_matrix(args: argparse.Namespace) -> None:
    from zoo import matrix, plan

    executor = _executor(args)
    overrides = _overrides(args)
    with _progress() as progress:
        result = matrix.run(args.family, args.profile, progress, matrix_file=args.matrix, data_dir=args.data_dir,
                            root=args.root, patterns=args.cells, dry_run=args.dry_run, executor=executor, overrides=overrides)
    table = Table(title=f"{args.family} matrix · profile {args.profile} · {result['root']}")
    table.add_column("cell")
    if args.dry_run:
        table.add_column("modifiers")
        table.add_column("status")
        table.add_column("train steps", justify="right")
        table.add_column("lr", justify="right")
        table.add_column("estimate", justify="right")
        for c in result["cells"]:
            estimate = f"{c['estimate_s'] / 60:.1f} min" if c["estimate_s"] is not None else "n/a"
            steps = "epochs" if c["train_steps"] is None else str(c["train_steps"])
            table.add_row(c["cell"], ", ".join(c["modifiers"]) or "(none)", "done" if c["done"] else "changed: re-run" if c.get("changed") else "to run", steps,
                          f"{c['learning_rate']:g}" if c["train_steps"] != 0 else "", estimate)
        todo = [c for c in result["cells"] if not c["done"]]
        if not todo:
            cost = "every selected cell is done"
        elif all(c["estimate_s"] is not None for c in todo):
            cost = f"estimated {sum(c['estimate_s'] for c in todo) / 60:.0f} min for the {len(todo)} cells to run"
        else:
            cost = "estimates need each task's dense run timings"
        teachers = "; ".join(f"{t['folder']}: {'ready' if t['ready'] else 'will be fine-tuned first'}" for t in result["teachers"].values())
        table.caption = f"teachers {teachers}; {cost}"
        plan.show(result["plan"], Console(width=max(Console().width, 120)))
    else:
        table.add_column("outcome")
        table.add_column("wall time", justify="right")
        for name, outcome in result["cells"].items():
            seconds = result["wall_time_s"].get(name)
            table.add_row(name, outcome, f"{seconds:.0f} s" if seconds else "")
        table.caption = "phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in result["wall_time_s"].items() if k in ("teacher", "total"))
    Console(width=max(Console().width, 120)).print(table)


def cmd_tables(args: argparse.Namespace) -> None:
    from zoo import matrix, results

    root, out = Path(args.root) if args.root else paths.matrix_root(args.family, args.profile), Path(args.out)
    # Tables written elsewhere (--out) leave the repo's README and committed records alone unless asked.
    elsewhere = out.resolve() != paths.RESULTS.resolve()
    readme = args.readme if args.readme is not None else ("" if elsewhere else str(paths.README))
    archive = Path(args.archive) if args.archive else out / paths.matrix_archive(args.family, args.profile).relative_to(paths.RESULTS)
    # Archived cells the matrix still defines must not be lost (results.check_nothing_lost).
    defined = ({cell.name for cell in matrix.selected_cells(args.family, args.profile, None, matrix.Overrides(), None, True)[3]}
               if archive.is_dir() else set())
    summary = results.build(args.family, root, out, Path(readme) if readme else None, archive, defined, args.cells)
    Console().print(f"{summary['rows']} rows -> {summary['csv']}")


def cmd_compress(args: argparse.Namespace) -> None:
    from zoo import sparse_storage

    table = Table(title="size on disk")
    for column in ("run folder", "dense MB", *(f"{form} MB (% of dense)" for form in sparse_storage.FORMS)):
        table.add_column(column, justify="right")
    for folder in args.run_dirs:
        size = sparse_storage.compress_run(folder)
        table.add_row(folder, f"{size['dense_bytes'] / 1e6:.1f}",
                      *(f"{f['bytes'] / 1e6:.1f} ({100 * f['ratio_to_dense']:.1f}%)" for f in size["forms"].values()))
    Console().print(table)


def cmd_export(args: argparse.Namespace) -> None:
    from zoo import pipeline
    from zoo.record import find_record

    record = find_record(args.checkpoint)
    task = args.task or (record.task if record else None)
    if not task:
        raise ZooError(f"{args.checkpoint} has no metrics.json naming its task; pass --task")
    run = pipeline.open_run(task, args.checkpoint, args.profile or (record.finetune_profile if record else "cpu"), args.data_dir)
    output = Path(args.output or paths.BENCH / f"onnx-parity-{Path(args.checkpoint).name}.json")
    with _progress() as progress:
        result = pipeline.onnx_parity(run, output, progress, _eval_limit(args.eval_examples, None), args.threads)
    Console().print(f"{result['onnx_file']} ({result['onnx_bytes'] / 1e6:.1f} MB): max |logit diff| {result['max_abs_logit_diff']}; "
                    f"metrics identical on {result['examples']} dev examples: {result['metrics_identical']} -> {output}")


def cmd_bench_cells(args: argparse.Namespace) -> None:
    from zoo import bench

    root = Path(args.root) if args.root else paths.matrix_root(args.family, args.profile)
    output = args.output or str(paths.BENCH / f"{args.family}-cells-{args.profile}.json")
    with _progress() as progress:
        record = bench.cells_speed(root, args.family, args.threads, output, progress, args.cells, args.reuse, args.repeats,
                                   args.engine, args.eval_examples, args.data_dir)
    Console().print(f"{len(record['results'])} cells measured -> bench.json in each cell, {output} and {Path(output).with_suffix('.md')}; "
                    f"`zoo tables {args.family}` puts them into the tables")


def cmd_bench_model(args: argparse.Namespace) -> None:
    from zoo import bench, engines, provenance, speed
    from zoo.io import write_json

    folder = Path(args.checkpoint)
    engines.get(args.engine)  # a missing extra: its one error before any work
    with _progress() as progress:
        check, no_dev = bench.dev_check(folder, args.eval_examples, args.data_dir, progress) if args.eval_examples else (None, "--eval-examples 0")
        record = speed.bench_folder(folder, threads=args.threads, engine=args.engine, check=check)
    output = Path(args.output or paths.BENCH / f"model-{folder.name}.json")
    write_json(output, {"benchmark": "model-speed", "what": f"PyTorch vs {args.engine} (the fp32 graph, and the int8 one when the folder has it)",
                        **record, **({"no_dev_score": no_dev} if no_dev else {}), "provenance": provenance.collect()})
    Console().print(f"{', '.join(record['engines'])} measured -> {output}")


def cmd_bench_engines(args: argparse.Namespace) -> None:
    from zoo import bench_engines

    output = Path(args.output or paths.BENCH / f"engines-{Path(args.checkpoints[0]).name}.json")
    with _progress() as progress:
        record = bench_engines.compare(args.checkpoints, args.engines, args.threads, args.batches, args.seq_len, args.rounds,
                                       args.eval_examples, output, progress, args.data_dir)
    Console().print(f"{len(record['variants'])} variants measured -> {output} and {output.with_suffix('.md')}")


def cmd_bench_compression(args: argparse.Namespace) -> None:
    from zoo import bench

    with _progress() as progress:
        result = bench.compression_step_cost(
            args.model, args.teacher, args.data_dir, args.steps, args.warmup_steps, args.batch_size,
            args.max_seq_length, args.doc_stride, args.output, progress, rounds=args.rounds,
        )
    Console().print_json(data={"results": result["results"], "comparison": result["comparison"]})


def cmd_bench_scale(args: argparse.Namespace) -> None:
    from zoo import bench_scale, plan

    overrides = _overrides(args)
    device = plan.run_device()
    name = f"scale-{args.family}-{args.profile}-{device}"
    output = Path(args.output or paths.BENCH / f"{name}.json")
    with _progress() as progress:
        report = bench_scale.run(args.family, args.profile, overrides, args.cells, Path(args.root or paths.RUNS / "bench-scale" / name),
                                 output, progress, args.data_dir, args.matrix)
    Console().print(bench_scale.markdown(report))


def cmd_bench_quality(args: argparse.Namespace) -> None:
    from zoo.bench_quality import quality

    try:
        keep_lists = [[int(i) for i in k.split(",")] for k in args.keep]
    except ValueError as e:
        raise ZooError(f"--keep {' '.join(args.keep)}: each keep-list is comma-separated layer indices, e.g. 0,2,4") from e
    root, output = _variant_paths(args, "quality")
    with _progress() as progress:
        record = quality(args.family, args.profile, args.steps, _eval_limit(args.eval_examples, None), args.sparsities, keep_lists,
                         root, output, progress, args.data_dir, args.matrix, args.methods)
    _print_variants(record, f"bench quality · {record['settings']['task']} · -> {output}")


def cmd_bench_distill(args: argparse.Namespace) -> None:
    from zoo.bench_quality import distillation

    root, output = _variant_paths(args, "distill")
    with _progress() as progress:
        record = distillation(args.family, args.profile, args.steps, _eval_limit(args.eval_examples, None), args.layers, args.width,
                              args.sparsity, root, output, progress, args.data_dir, args.matrix, args.variants)
    _print_variants(record, f"bench distill · {record['settings']['task']} · -> {output}")


def _variant_paths(args: argparse.Namespace, benchmark: str) -> tuple[Path, Path]:
    return (Path(args.root or paths.run_dir(f"bench-{benchmark}", f"{args.family}-{args.profile}")),
            Path(args.output or paths.BENCH / f"{benchmark}-{args.family}-{args.profile}.json"))


def _print_variants(record: dict, title: str) -> None:
    table = Table(title=title)
    for column in ("variant", "steps", "score", "% of teacher"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    metric = next(k for k in record["results"]["teacher"] if k not in ("steps",))
    for name, row in record["results"].items():
        retention = row["retention_pct"]  # None: a teacher scoring 0 has no percentage
        table.add_row(name, str(row["steps"]), f"{row[metric]:.2f}", "n/a" if retention is None else f"{retention:.1f}")
    Console(width=max(Console().width, 100)).print(table)


def cmd_bench_int8(args: argparse.Namespace) -> None:
    from zoo.bench_int8 import int8

    output = Path(args.output or paths.BENCH / f"int8-{args.task}-{args.profile}.json")
    with _progress() as progress:
        record = int8(args.task, args.checkpoint, args.profile, _eval_limit(args.eval_examples, None), args.methods, args.batches,
                      args.batch_size, args.scoring_features, args.threads, output, progress, args.data_dir)
    table = Table(title=f"bench int8 · {args.task} · -> {output}")
    for column in ("model", record["comparison"]["metric"], "MSE vs fp32", "ms b1 x 128", "ms b1 x 384", "MB"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, row in record["results"].items():
        table.add_row(name, f"{row['dev'][record['comparison']['metric']]:.2f}", f"{row['vs_fp32_on_held_out_training']['logit_mse']:.4f}",
                      f"{row['speed']['runs']['latency_b1_s128']['median_ms']:.1f}", f"{row['speed']['runs']['latency_b1_s384']['median_ms']:.1f}",
                      f"{row['onnx_bytes'] / 1e6:.1f}")
    Console(width=max(Console().width, 100)).print(table)


def cmd_publish(args: argparse.Namespace) -> None:
    from zoo import hub, pins

    root = Path(args.root) if args.root else paths.matrix_root(args.family, args.profile)
    pins_file = Path(args.pins or pins.default_path(args.family, args.org))
    outcome = hub.publish(args.family, root, args.org, pins_file=pins_file, to=Path(args.to) if args.to else None)
    table = Table(title=f"published to {args.to or 'the Hub'} as {args.org}/...")
    table.add_column("repo")
    table.add_column("commit")
    for name, committed in outcome.items():
        table.add_row(f"{args.org}/{name}", "new commit" if committed else "unchanged, no commit")
    table.caption = f"repos and file hashes pinned in {pins_file}: commit it with the results"
    Console(width=max(Console().width, 100)).print(table)


def cmd_reproduce(args: argparse.Namespace) -> None:
    from zoo import pins, reproduce

    out = Path(args.out or reproduce.default_out(args.family, args.org))
    pins_file = Path(args.pins or pins.default_path(args.family, args.org))
    with _progress() as progress:
        summary = reproduce.reproduce(args.family, args.org, out, progress, pins_file, args.data_dir, args.tolerance)
    worst = summary["largest_difference"]
    Console().print(f"{summary['repos']} repos match {pins_file}; {summary['metrics_compared']} metrics within {args.tolerance} of their cards; "
                    f"largest difference {worst['abs_diff']} ({worst['repo']} {worst['metric']}); tables in {out}")


def cmd_pick(args: argparse.Namespace) -> None:
    from zoo import pick, pins
    from zoo.hub import endpoint

    csv = Path(args.csv or paths.RESULTS / f"{args.family}.csv")
    pinned = pins.default_path(args.family, args.org)
    out = Console(soft_wrap=True, highlight=False)  # stdout, one line per fact: a command stays copyable
    for best in pick.pick(csv, max_latency_ms=args.max_latency_ms, max_size_mb=args.max_size_mb, min_retention=args.min_retention):
        retention = f" ({best['retention']:.1f}% of the teacher)" if best["retention"] == best["retention"] else ""  # NaN: teacher scored 0
        out.print(f"{best['task']}: {best['cell']} — {best['metric']} {best[best['metric']]:.2f}{retention}, "
                  f"{best['latency_b1_s128_ms']} ms at batch 1 x 128, {best['size_mb']} MB")
        out.print(pick.run_command(best["task"], best["cell"], args.org, endpoint(), best["dev_examples"]))
    if not pinned.is_file():
        out.print(f"({pinned} is absent: '{args.org}' has not published {args.family} from this checkout; pass --org)")


def cmd_hub_serve(args: argparse.Namespace) -> None:
    from zoo import hub

    config = hub.olah_config(Path(args.dir), args.port, paths.RUNS / "olah.toml")
    console.print(f"serving {Path(args.dir).resolve()} — use: export HF_ENDPOINT=http://127.0.0.1:{args.port}")
    # olah with the Hub's 404 for a repo's absent paths (zoo/olah_serve.py); the server keeps this pid
    os.execve(sys.executable, [sys.executable, "-m", "zoo.olah_serve", "-c", str(config)], {**os.environ, "ZOO_HUB_DIR": str(Path(args.dir).resolve())})


def build_parser() -> argparse.ArgumentParser:
    parser = cli_args.Parser(prog="zoo", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("finetune", "fine-tune a model on a task, then evaluate it"), ("evaluate", "evaluate a fine-tuned checkpoint")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("task", help="task, e.g. squad, sst2, tnews, conll2003")
        p.add_argument("--model", default="minilm", help="'minilm' (embedded), 'minilm-zh' (its Chinese transplant), a local folder or a Hub id")
        p.add_argument("--profile", default="cpu", help="profile in recipes/FAMILY.yaml (cpu, full)")
        p.add_argument("--output", type=output_folder, help="run folder (default runs/TASK/NAME-PROFILE)")
        p.add_argument("--data-dir", help="local data root (default $ZOO_DATA_DIR; unset = Hub)")
        p.add_argument("--eval-examples", type=examples, help="dev examples to score: N or 'all' (default: the profile's)")
        if name == "finetune":
            p.add_argument("--recipe", type=existing_file, help="compression recipe YAML (zoo/recipe.py modifiers); none: dense")
            p.add_argument("--max-steps", type=whole_number, help="stop training after N optimizer steps, 0 for none (default: the profile's epochs)")
            p.add_argument("--train-examples", type=positive_int, help="train on a seeded random N examples (default: the profile's)")
        p.set_defaults(func=cmd_run)
    p = sub.add_parser("matrix", help="run a compression matrix (recipes/FAMILY-matrix.yaml) for each of its tasks")
    p.add_argument("family", type=cli_args.family, help="squad, glue, clue or ner")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--matrix", type=existing_file, help="matrix file (default recipes/FAMILY-matrix.yaml)")
    p.add_argument("--root", type=output_folder, help="folder for the cells (default runs/FAMILY-matrix/PROFILE)")
    p.add_argument("--cells", nargs="+", help="only cells matching these names/globs")
    p.add_argument("--dry-run", action="store_true", help="list the cells with an estimated cost, run nothing")
    p.add_argument("--data-dir")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: cells one after another here (default); ray: cells as Ray tasks (pip install 'zoo[ray]')")
    p.add_argument("--address", help="with --executor ray: an existing Ray cluster (auto, HEAD:6379 or ray://HEAD:10001; default: a Ray instance started here)")
    p.add_argument("--workers", type=positive_int, help="with --executor ray: at most N cells at once (default: as many as the cluster's resources allow)")
    p.add_argument("--model", help="every task's base model instead of the profile's, e.g. random:bert-base-uncased (its shape, random weights)")
    p.add_argument("--train-examples", type=positive_int, help="cells and teacher train on a seeded random N examples")
    p.add_argument("--eval-examples", type=examples, help="dev examples cells and teacher are scored on: N or 'all'")
    p.add_argument("--max-steps", type=whole_number, help="every trained cell and the teacher train for N optimizer steps")
    p.add_argument("--batch-size", type=positive_int, help="training batch size of cells and teacher")
    p.set_defaults(func=cmd_matrix)
    p = sub.add_parser("tables", help="build results/FAMILY.{csv,md,png}, results/README.md and the README table from matrix cells")
    p.add_argument("family", type=cli_args.family)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--root", help="folder of cell folders (default runs/FAMILY-matrix/PROFILE)")
    p.add_argument("--out", type=output_folder, default=str(paths.RESULTS), help="folder for FAMILY.{csv,md,png} and README.md")
    p.add_argument("--readme", type=optional_file, help="README to update between results markers ('' to skip; default README.md, "
                                                         "none when --out is another folder)")
    p.add_argument("--archive", type=output_folder, help="where cell metrics are copied for git (default OUT/FAMILY/matrix-PROFILE)")
    p.add_argument("--cells", nargs="+", help="--root re-ran only these cells (names/globs, as zoo matrix --cells): they replace "
                   "their archived copies, the other archived cells stay, and the tables are made from the archive")
    p.set_defaults(func=cmd_tables)
    p = sub.add_parser("publish", help="publish every matrix cell as a Hub model repo")
    p.add_argument("family", type=cli_args.family)
    p.add_argument("--org", required=True)
    p.add_argument("--to", type=output_folder, help="a local hub folder (models/ORG/NAME git repos) instead of the Hub")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--root", help="folder of cell folders (default runs/FAMILY-matrix/PROFILE)")
    p.add_argument("--pins", type=output_file, help="where the repo list and file hashes are pinned (default results/hub/FAMILY-ORG.json)")
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser("reproduce", help="download ORG's checkpoints, re-evaluate, rebuild the tables, check the cards")
    p.add_argument("--org", required=True)
    p.add_argument("--family", type=cli_args.family, required=True, help="squad, glue, clue or ner")
    p.add_argument("--out", type=output_folder, help="a new folder for the rebuilt tables (default runs/reproduced/FAMILY-ORG-UTCTIME)")
    p.add_argument("--pins", type=cli_args.existing_file, help="the pinned repos and hashes (default results/hub/FAMILY-ORG.json)")
    p.add_argument("--data-dir")
    p.add_argument("--tolerance", type=positive_float, default=0.1, help="largest allowed |card - reproduced| per metric")
    p.set_defaults(func=cmd_reproduce)
    p = sub.add_parser("compress", help="write the bitmask-compressed weights (lossless fp32 and fp16) into run folders, sizes into metrics.json")
    p.add_argument("run_dirs", type=checkpoint_folder, nargs="+", metavar="RUN_DIR")
    p.set_defaults(func=cmd_compress)
    p = sub.add_parser("export", help="export a checkpoint to ONNX and check ONNX Runtime against PyTorch on dev examples")
    p.add_argument("checkpoint", type=checkpoint_folder, help="a run or cell folder")
    p.add_argument("--task", help="default: the folder's metrics.json")
    p.add_argument("--profile", help="profile for features (default: the folder's metrics.json, else cpu)")
    p.add_argument("--eval-examples", type=examples, default="200", help="dev examples compared: N or 'all'")
    p.add_argument("--threads", type=positive_int, help="ONNX Runtime threads (default: its own choice)")
    p.add_argument("--data-dir")
    p.add_argument("--output", type=output_file, help="default results/bench/onnx-parity-NAME.json")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("pick", help="the best cell per task of results/FAMILY.csv under a latency, size or retention bound, and how to run it")
    p.add_argument("family", type=cli_args.family)
    p.add_argument("--max-latency-ms", type=positive_float, help="at most this many ms at batch 1 x 128 tokens")
    p.add_argument("--max-size-mb", type=positive_float, help="at most this many MB of served model file")
    p.add_argument("--min-retention", type=positive_float, help="at least this % of the teacher's score")
    p.add_argument("--org", default="zoo-local", help="the org the cells were published as (default zoo-local, `make publish-local`)")
    p.add_argument("--csv", type=cli_args.existing_file, help="default results/FAMILY.csv")
    p.set_defaults(func=cmd_pick)
    p = sub.add_parser("hub-serve", help="serve a local hub folder with olah on loopback")
    p.add_argument("--dir", type=cli_args.existing_folder, default=str(paths.HUB_DIR), help="the local hub folder `zoo publish --to` wrote")
    p.add_argument("--port", type=port, default=8090)
    p.set_defaults(func=cmd_hub_serve)
    bench = sub.add_parser("bench", help="benchmarks writing JSON under results/bench/")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    p = bench_sub.add_parser("train", help="training throughput: dynamic padding + length grouping vs pad-to-max, fp32 vs bf16 autocast, "
                                           "AdamW vs fused AdamW, or the model's dropout vs none")
    p.add_argument("--model", default="minilm")
    p.add_argument("--compare", choices=["padding", "precision", "optimizer", "dropout"], default="padding",
                   help="padding: zoo's pipeline vs pad-to-max (results/bench/train-throughput.json); "
                        "precision: fp32 vs bf16 autocast; optimizer: AdamW's per-tensor loop vs its fused kernel; dropout: the model's "
                        "dropout vs none (fused AdamW); all in bf16 where the CPU has it (interleaved rounds, results/bench/train-KIND-cpu.json)")
    p.add_argument("--rounds", type=positive_int, default=3, help="--compare precision/optimizer/dropout: interleaved rounds (median and spread)")
    _bench_arguments(p, steps=24, max_seq_length=384, output=None)
    p.set_defaults(func=cmd_bench_train)
    p = bench_sub.add_parser("cells", help="latency/throughput/size/FLOPs of every matrix cell (bench.json per cell) + speedup vs FLOPs")
    p.add_argument("family", type=cli_args.family)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--root", help="folder of cell folders (default runs/FAMILY-matrix/PROFILE)")
    p.add_argument("--cells", nargs="+", help="only cells matching these names/globs")
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads for both engines (default 1: steady on a shared machine)")
    p.add_argument("--output", type=output_file, help="default results/bench/FAMILY-cells-PROFILE.json (+ .md)")
    p.add_argument("--reuse", action="store_true", help="keep cells' existing bench.json; measure only the others")
    p.add_argument("--repeats", type=positive_int, default=20, help="timed calls per batch-1 shape (batch 32: a quarter, at least 3)")
    _engine_arguments(p)
    p.set_defaults(func=cmd_bench_cells)
    p = bench_sub.add_parser("scale", help="a matrix profile's code path at its model's real shape for a few steps: memory, cache, step time vs the plan")
    p.add_argument("family", nargs="?", default="squad", type=cli_args.family)
    p.add_argument("--profile", default="full")
    p.add_argument("--matrix", type=existing_file, help="matrix file (default recipes/FAMILY-matrix.yaml)")
    p.add_argument("--model", default="random:bert-base-uncased", help="base model (default: bert-base's shape with random weights)")
    p.add_argument("--cells", nargs="+", default=["*-s0-l12", "*-s90-l12-kd", "*-s0-l12-int8"],
                   help="cells to run (default: the dense reference and its int8, and the 90%% sparse KD cell, the largest teacher cache)")
    p.add_argument("--train-examples", type=positive_int, default=300)
    p.add_argument("--eval-examples", type=examples, default=100, help="N or 'all'")
    p.add_argument("--max-steps", type=whole_number, default=8)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--root", type=output_folder, help="cell folders (default runs/bench-scale/NAME)")
    p.add_argument("--output", type=output_file, help="default results/bench/scale-FAMILY-PROFILE-DEVICE.json (+ .md)")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_bench_scale)

    p = bench_sub.add_parser("quality", help="pruning criteria (magnitude, Wanda, movement, OBS) and layer keep-lists, 0 and N recovery steps, vs the teacher")
    _variant_arguments(p, "quality", steps=50, eval_examples="1000")
    p.add_argument("--sparsities", type=fraction, nargs="+", default=[0.5, 0.8, 0.9])
    p.add_argument("--methods", nargs="+", help="what to compare, of magnitude wanda movement obs layers (default: all)")
    p.add_argument("--keep", nargs="+", default=["0,2,5", "0,2,4"], help="layer keep-lists to compare with the data-chosen one")
    p.set_defaults(func=cmd_bench_quality)
    p = bench_sub.add_parser("distill", help="each distillation option on a layer-dropped, a width-pruned and a sparse student, vs plain KD")
    _variant_arguments(p, "distill", steps=100, eval_examples="2000")
    p.add_argument("--layers", type=positive_int, default=3, help="layers the layer-dropped student keeps (chosen on data)")
    p.add_argument("--width", type=kept_fraction, default=0.5, help="width of the width-pruned student")
    p.add_argument("--sparsity", type=fraction, default=0.8, help="sparsity of the OBS-pruned student")
    p.add_argument("--variants", nargs="+", help="only these variants (names or globs; the teacher always runs)")
    p.set_defaults(func=cmd_bench_distill)
    p = bench_sub.add_parser("model", help="one checkpoint under PyTorch and an engine: its fp32 graph and (if present) its int8 one")
    p.add_argument("checkpoint", type=checkpoint_folder)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--output", type=output_file, help="default results/bench/model-NAME.json")
    _engine_arguments(p)
    p.set_defaults(func=cmd_bench_model)
    p = bench_sub.add_parser("engines", help="each installed engine x precision on trained cells (or a dense checkpoint and shapes derived "
                             "from it): speed vs ORT fp32 of the first, agreement, dev score per engine")
    p.add_argument("checkpoints", type=checkpoint_folder, nargs="*", default=[DENSE_SQUAD],
                   help="trained run/cell folders, the dense one first (read only); one dense folder: its 3-layer, width-50%% and "
                        "sparse shapes are derived one-shot (untrained)")
    p.add_argument("--engines", nargs="+", choices=["onnxruntime", "openvino"], default=["onnxruntime", "openvino"])
    p.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=positive_int, nargs="+", default=[1, 32])
    p.add_argument("--seq-len", type=positive_int, default=128)
    p.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds (median and spread over them)")
    p.add_argument("--eval-examples", type=whole_number, default=500, help="dev examples each trained model is scored on per engine (0: none)")
    p.add_argument("--output", type=output_file, help="default results/bench/engines-NAME.json (+ .md)")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_bench_engines)
    p = bench_sub.add_parser("compression", help="pruning+KD step (cached / live teacher) vs a plain fine-tune step")
    p.add_argument("--model", default=DENSE_SQUAD, help="student start point")
    p.add_argument("--teacher", default=DENSE_SQUAD)
    p.add_argument("--rounds", type=positive_int, default=2, help="alternating rounds; each variant's best round counts")
    _bench_arguments(p, steps=16, max_seq_length=256, output=str(paths.BENCH / "compression-step.json"))
    p.set_defaults(func=cmd_bench_compression)
    p = bench_sub.add_parser("int8", help="fp32 vs dynamic vs static int8 (every calibration candidate): dev score, latency, size")
    p.add_argument("task", nargs="?", default="squad")
    p.add_argument("--checkpoint", default=DENSE_SQUAD, help="a trained run folder (read only)")
    p.add_argument("--profile", default="cpu", help="profile for features and the training subset calibration draws from")
    p.add_argument("--eval-examples", type=examples, default="500", help="dev examples every model is scored on: N or 'all'")
    p.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile", "distribution"])
    p.add_argument("--batches", type=positive_int, nargs="+", default=[4, 16], help="calibration batch counts to search")
    p.add_argument("--batch-size", type=positive_int, default=8, help="calibration batch size")
    p.add_argument("--scoring-features", type=positive_int, default=256, help="held-out training features the candidates are scored on")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--output", type=output_file, help="default results/bench/int8-TASK-PROFILE.json")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_bench_int8)
    return parser


def _variant_arguments(p: argparse.ArgumentParser, benchmark: str, steps: int, eval_examples: str) -> None:
    p.add_argument("family", type=cli_args.family, nargs="?", default="squad")
    p.add_argument("--profile", default="cpu", help="matrix profile: teacher, data, training, calibration and distillation settings")
    p.add_argument("--matrix", type=existing_file, help="matrix file (default recipes/FAMILY-matrix.yaml)")
    p.add_argument("--steps", type=positive_int, default=steps, help="recovery steps of a full-size variant (cheaper ones: proportionally more)")
    p.add_argument("--eval-examples", type=examples, default=eval_examples, help="dev examples every variant (and the teacher) is scored on: N or 'all'")
    p.add_argument("--root", type=output_folder, help=f"variant run folders (default runs/bench-{benchmark}/FAMILY-PROFILE)")
    p.add_argument("--output", type=output_file, help=f"default results/bench/{benchmark}-FAMILY-PROFILE.json")
    p.add_argument("--data-dir")


def _engine_arguments(p: argparse.ArgumentParser) -> None:
    """The inference engine a speed benchmark times, and the real inputs its accuracy check uses."""
    p.add_argument("--engine", choices=["onnxruntime", "openvino"], default="onnxruntime",
                   help="inference engine (openvino: the optional extra zoo[openvino])")
    p.add_argument("--eval-examples", type=whole_number, default=200,
                   help="dev examples the PyTorch and the engine's model are both scored on (0: agreement on synthetic inputs only)")
    p.add_argument("--data-dir")


def _bench_arguments(p: argparse.ArgumentParser, steps: int, max_seq_length: int, output: str | None) -> None:
    """What every SQuAD training benchmark takes: data, step counts, feature shape, output."""
    p.add_argument("--data-dir")
    p.add_argument("--steps", type=positive_int, default=steps, help="timed steps per variant")
    p.add_argument("--warmup-steps", type=positive_int, default=2, help="untimed steps first (the clock starts at the end of the last)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--max-seq-length", type=positive_int, default=max_seq_length)
    p.add_argument("--doc-stride", type=positive_int, default=128)
    p.add_argument("--output", type=output_file, default=output)


def _error(message: str) -> int:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, emoji=False, soft_wrap=True)  # messages may hold [brackets], :x:
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ZooError as e:  # a flag out of range, a path that must exist: cli_args.Parser
        return _error(str(e))
    if not args.debug:  # our rich bars replace the libraries' tqdm bars and load-report chatter
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from huggingface_hub.utils import logging as hub_logging
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hub_logging.set_verbosity_error()  # retries against an unreachable Hub are not the user's error line
    try:
        args.func(args)
    except ZooError as e:
        if args.debug:
            raise
        return _error(str(e))
    except ConnectionError as e:  # datasets/hub raise it bare (no errno) when the Hub's copy of data or a model is out of reach
        if args.debug or e.errno is not None:
            raise
        return _error(f"{e}; set {paths.DATA_DIR_ENV} (or --data-dir) to the local data root, or HF_ENDPOINT to a reachable Hub mirror")
    except OSError as e:  # the machine, not zoo: a full or read-only disk, a folder that vanished
        if args.debug or e.errno is None:
            raise
        return _error(f"{e.filename or 'a file'}: {e.strerror} (errno {e.errno}); free space or choose a writable place, then re-run")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
