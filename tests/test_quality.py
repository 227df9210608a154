"""Quality machinery: OBS pruning, data-chosen layers, the recovery budget."""

from functools import partial

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering

from tests.conftest import committed_record, teacher_then_cell
from zoo import matrix
from zoo.engine import Manager
from zoo.errors import ZooError
from zoo.layers import choose_layers, unexplained_variance
from zoo.modifiers.distillation import default_layer_map
from zoo.obs import admm_prune_weight, allocate, obs_prune_weight, prune_model
from zoo.profiles import TrainConfig
from zoo.recipe import parse_recipe
from zoo.sparsity import DEFAULT_PRUNE_TARGETS, target_names
from zoo.task import FeatureSet
from zoo.train import batch_plan


def correlated_inputs(tokens=3000, dim=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, dim, generator=g) @ torch.randn(dim, dim, generator=g)


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_obs_reconstructs_a_linear_better_than_magnitude_and_admm_better_still(sparsity):
    X = correlated_inputs()
    W = torch.randn(24, 48, generator=torch.Generator().manual_seed(1))
    pruned = obs_prune_weight(W, X.T @ X / len(X), sparsity, block_size=16)
    admm = admm_prune_weight(W, X.T @ X / len(X), sparsity)
    k = round(sparsity * W.numel())
    magnitude = W.masked_fill(W.abs() <= W.abs().flatten().kthvalue(k).values, 0.0)

    def error(A):
        return float(((X @ W.T - X @ A.T) ** 2).sum())

    assert int((pruned == 0).sum()) == k == int((magnitude == 0).sum()) == int((admm == 0).sum())  # exactly the target
    assert error(admm) < error(pruned) < error(magnitude)


def test_obs_count_is_exact_across_uneven_blocks():
    X = correlated_inputs(dim=50)
    W = torch.randn(7, 50)
    pruned = obs_prune_weight(W, X.T @ X / len(X), 0.63, block_size=16)  # blocks of 16, 16, 16, 2 columns
    assert int((pruned == 0).sum()) == round(0.63 * 350)


def test_admm_count_is_exact_when_many_weights_tie():
    X = correlated_inputs(dim=40)
    W = torch.randn(6, 40)
    W[:, :10] = 0.5  # 60 equal weights straddle every mask threshold of the schedule
    pruned = admm_prune_weight(W, X.T @ X / len(X), 0.3)
    assert int((pruned == 0).sum()) == round(0.3 * 240)


def tiny_model(tiny_bert_dir):
    return AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir, use_safetensors=True).eval()


def calibration(n_batches=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        mask = torch.ones(4, 20, dtype=torch.long)
        mask[:, 15:] = 0  # padded tokens must not enter H
        batches.append({"input_ids": torch.randint(1000, 5000, (4, 20), generator=g), "attention_mask": mask,
                        "token_type_ids": torch.zeros(4, 20, dtype=torch.long)})
    return batches


def encoder_weights(model):
    names = target_names([n for n, _ in model.named_parameters()], [r"encoder\.layer\.\d+\..*(query|key|value|dense)\.weight$"], [])
    return [n for n in names if model.get_parameter(n).ndim == 2]


def strong_model(tokenizer):
    """A random BERT whose layers matter (the default init, std 0.02, leaves the residual stream almost untouched)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, initializer_range=0.3)).eval()


def test_prune_model_hits_each_weight_exactly_and_beats_magnitude_on_outputs(tokenizer):
    model, reference = strong_model(tokenizer), strong_model(tokenizer)
    names = encoder_weights(model)
    report = prune_model(model, calibration(), allocate({n: model.get_parameter(n) for n in names}, 0.6, "uniform"),
                         partial(obs_prune_weight, block_size=16))
    for n in names:
        w = model.get_parameter(n)
        assert int((w == 0).sum()) == round(0.6 * w.numel()), n
    assert set(report["relative_output_error"]) == set(names)
    assert report["calibration_tokens"] == 3 * 4 * 15  # real tokens only

    magnitude = strong_model(tokenizer)
    with torch.no_grad():
        for n in names:
            w = magnitude.get_parameter(n)
            w.masked_fill_(w.abs() <= w.abs().flatten().kthvalue(round(0.6 * w.numel())).values, 0.0)
    held_out = calibration(seed=1)[0]

    def drift(m):
        with torch.no_grad():
            return float((m(**held_out).last_hidden_state - reference(**held_out).last_hidden_state).pow(2).mean())

    assert drift(model) < drift(magnitude)


def test_global_allocation_keeps_the_total():
    weights = {"a": torch.arange(1.0, 101.0).reshape(10, 10), "b": torch.arange(101.0, 201.0).reshape(10, 10)}
    shares = allocate(weights, 0.5, "global")
    assert shares["a"] == 1.0 and shares["b"] == 0.0  # every small weight is in 'a'
    assert sum(shares[n] * weights[n].numel() for n in weights) == 100


def test_unexplained_variance_is_zero_for_an_affine_map_and_one_for_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 16, generator=g)
    affine = x @ torch.randn(16, 8, generator=g) + 3.0
    assert unexplained_variance(x, affine) < 0.002
    assert unexplained_variance(x, torch.randn(4000, 8, generator=g)) > 0.99
    half = torch.cat([x[:, :4], torch.randn(4000, 4, generator=g)], dim=1)  # equal variance: half of it is in x
    assert 0.45 < unexplained_variance(x, half) < 0.55


def test_layer_search_picks_the_layer_that_does_nothing(tokenizer):
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
                                                num_attention_heads=4, intermediate_size=64, initializer_range=0.3)).eval()
    with torch.no_grad():  # layer 1 adds nothing to the residual stream: LayerNorm(x + 0) = x
        for linear in (model.bert.encoder.layer[1].attention.output.dense, model.bert.encoder.layer[1].output.dense):
            linear.weight.zero_()
            linear.bias.zero_()
    keep, report = choose_layers(model, 2, calibration())
    assert keep == [0, 2]
    assert report["method"] == "exhaustive" and len(report["scores"]) == 3
    others = [v for k, v in report["scores"].items() if k != "[0, 2]"]
    assert report["scores"]["[0, 2]"] < 0.01 < 10 * report["scores"]["[0, 2]"] < min(others)  # only the ridge's shrinkage is left
    assert len(model.bert.encoder.layer) == 3  # the search leaves the model as it was

    manager = Manager(parse_recipe({"modifiers": [{"type": "layer_drop", "strategy": "search", "n": 2}]}, "r"),
                      ("start_logits", "end_logits"))
    manager.prepare(model, lambda n: calibration())
    assert len(model.bert.encoder.layer) == 2 and manager.report["layers_kept"] == [0, 2]
    assert default_layer_map([0, 2], 2, 3) == [1, 3]  # layer 0 -> teacher layer 1; the last -> the teacher's last


def test_greedy_layer_search_keeps_exactly_n_layers(tokenizer):
    """Beyond MAX_EXHAUSTIVE keep-lists the search removes layers greedily; the longer lists on the
    way score lower (they keep more), and the answer is still n layers (it was 11 of 12 for n = 3)."""
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=10,
                                                num_attention_heads=4, intermediate_size=64, initializer_range=0.3)).eval()
    keep, report = choose_layers(model, 3, calibration())  # C(10, 3) = 120 > 64
    assert report["method"] == "greedy removal" and len(keep) == 3 and keep == sorted(keep)
    assert report["scores"][str(keep)] == max(report["scores"].values())  # the shortest list explains the least


@pytest.mark.slow
def test_obs_cell_keeps_its_mask_through_recovery(tmp_path, squad_data_root, tiny_bert_dir):
    _, cell = teacher_then_cell("squad", tiny_bert_dir, squad_data_root, tmp_path,
                                [{"type": "obs_pruning", "final_sparsity": 0.7, "calibration_examples": 8, "block_size": 16}],
                                batch_size=8, epochs=2)
    assert cell.train.steps > 1
    state = load_file(tmp_path / "cell" / "model.safetensors")
    names = target_names(state, DEFAULT_PRUNE_TARGETS, [])
    for n in names:
        if state[n].ndim == 2:
            assert int((state[n] == 0).sum()) == round(0.7 * state[n].numel()), n  # exact after training, read from disk
    assert [r["round"] for r in cell.compression.obs_pruning["rounds"]] == [1]
    assert cell.measured_sparsity == pytest.approx(0.7, abs=1e-3)


@pytest.mark.slow
def test_obs_rounds_follow_the_cubic_schedule_and_end_exact(tmp_path, squad_data_root, tiny_bert_dir):
    _, cell = teacher_then_cell("squad", tiny_bert_dir, squad_data_root, tmp_path,
                                [{"type": "obs_pruning", "final_sparsity": 0.8, "rounds": 3, "end": 0.5, "calibration_examples": 8,
                                  "block_size": 16}], batch_size=4, epochs=2)
    steps = cell.train.steps
    rounds = cell.compression.obs_pruning["rounds"]
    assert [(r["round"], r["step"]) for r in rounds] == [(1, None), (2, round(0.5 * round(0.5 * steps))), (3, round(0.5 * steps))]
    assert [r["sparsity"] for r in rounds] == [round(0.8 * (1 - (1 - i / 3) ** 3), 4) for i in (1, 2, 3)]
    state = load_file(tmp_path / "cell" / "model.safetensors")
    for n in target_names(state, DEFAULT_PRUNE_TARGETS, []):
        if state[n].ndim == 2:
            assert int((state[n] == 0).sum()) == round(0.8 * state[n].numel()), n


def test_budget_gives_cheaper_cells_more_steps(tiny_matrix):
    path, _ = tiny_matrix
    profile, _ = matrix.load_matrix("squad", "tiny", path)
    profile = profile.model_copy(update={"cell_steps": 10, "axes": [matrix.Axes(layers=[2, 1], distill=[False, True]),
                                                                    matrix.Axes(width=[0.5], quant=["none", "int8"])]})
    cells = {c.name: c for c in matrix.build_cells("squad", profile, 2, "test")}
    steps = {name: matrix.train_steps(c, profile, 2) for name, c in cells.items()}
    full, half, width, int8 = (next(v for k, v in steps.items() if k.endswith(s)) for s in ("s0-l2", "s0-l1-kd", "w50", "w50-int8"))
    assert full == 0  # nothing compressed and init=teacher: the teacher's own weights, re-scored
    assert half == 20 and width == 20  # half the cost per step, twice the steps
    assert int8 == 0  # quantises its sibling's weights
    assert matrix.train_steps(cells[next(k for k in cells if k.endswith("s0-l1"))], profile.model_copy(update={"cell_steps": None}), 2) is None
    longer = profile.model_copy(update={"cell_train_by": {"width": {0.5: {"max_steps": 35}}}})  # a setting names its own recovery
    assert [matrix.train_steps(cells[next(k for k in cells if k.endswith(s))], longer, 2) for s in ("w50", "w50-int8", "s0-l1-kd")] == [35, 0, 20]


def test_max_steps_cuts_the_plan():
    features = FeatureSet(rows=[{"input_ids": [1] * (5 + i % 7)} for i in range(100)])
    cfg = TrainConfig(epochs=2, batch_size=8, learning_rate=1e-4)
    assert len(batch_plan(features, cfg)) == 26
    assert len(batch_plan(features, cfg.model_copy(update={"max_steps": 9}))) == 9
    assert len(batch_plan(features, cfg.model_copy(update={"max_steps": 0}))) == 0
    longer = batch_plan(features, cfg.model_copy(update={"max_steps": 60}))  # max_steps runs past the epochs
    assert len(longer) == 60 and longer[:26] == batch_plan(features, cfg)


def test_magnitude_schedule_reaches_its_final_sparsity_or_refuses(tiny_bert_dir):

    def manager(**pruning):
        return Manager(parse_recipe({"modifiers": [{"type": "magnitude_pruning", "final_sparsity": 0.5, **pruning}]}, "r"), ())

    model = tiny_model(tiny_bert_dir)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ZooError, match="past the 10 training steps"):
        manager(unit="step", start=0, end=20).on_train_start(model, optimizer, total_steps=10)
    one_shot = manager(start=0.0, end=0.0)  # one-shot at step 0 of a run with no steps
    one_shot.on_train_start(model, optimizer, total_steps=0)
    one_shot.on_train_end(model)
    weights = [model.get_parameter(n) for n in encoder_weights(model)]
    assert sum(int((w == 0).sum()) for w in weights) == sum(round(0.5 * w.numel()) for w in weights)


def test_retention_is_against_the_teacher_on_the_same_examples(tiny_matrix):
    from zoo import results
    from zoo.matrix import _reference

    dense = "squad/matrix-cpu/minilm-l6-squad-s0-l6"
    teacher = committed_record(dense, eval={"max_examples": 2000, "examples": 2000}, metrics={"exact_match": 50.0, "f1": 64.0})
    assert _reference(teacher, 600) is None  # other dev examples: no ratio
    reference = _reference(teacher, 2000)
    cell = committed_record(dense, cell={"teacher": reference.dump()}, metrics={"exact_match": 40.0, "f1": 48.0, "f1_se": 0.9})
    assert cell.retention == 75.0
    line = results.teacher_line([cell])
    assert "(64.0) on the same 2000 dev examples" in line and "0.90 to 0.90 points" in line


# ---- defects from trying zoo as a new user (issue 10) ------------------------------------


def test_output_folder_of_the_users_is_never_replaced(tmp_path, squad_data_root, tiny_bert_dir):
    from rich.progress import Progress

    from zoo import pipeline

    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    run = pipeline.open_run("squad", str(tiny_bert_dir), "cpu", str(squad_data_root))
    with Progress(disable=True) as progress, pytest.raises(ZooError, match="not a zoo run folder"):
        pipeline.finetune(run, mine, progress, None)
    assert (mine / "thesis.tex").read_text() == "precious"


def test_model_folder_without_tokenizer_is_refused(tmp_path, squad_data_root, tiny_bert_dir):
    import shutil

    from zoo import pipeline

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(tiny_bert_dir / name, bare / name)
    with pytest.raises(ZooError, match="has no tokenizer"):
        pipeline.open_run("squad", str(bare), "cpu", str(squad_data_root))


def test_teacher_of_another_task_is_refused(tmp_path, tiny_bert_dir, tokenizer):
    from transformers import BertConfig, BertForSequenceClassification


    classifier = tmp_path / "sst2-teacher"
    BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64)).save_pretrained(classifier)
    manager = Manager(parse_recipe({"modifiers": [{"type": "distillation", "teacher": str(classifier)}]}, "r"), ("start_logits", "end_logits"))
    with pytest.raises(ZooError, match="is a BertForSequenceClassification with 2 labels, the student a BertForQuestionAnswering"):
        manager.prepare(tiny_model(tiny_bert_dir))
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ZooError, match="has no model.safetensors \\+ config.json"):
        Manager(parse_recipe({"modifiers": [{"type": "distillation", "teacher": str(no_config)}]}, "r"), ()).check(tiny_model(tiny_bert_dir))


def test_second_runner_on_a_folder_exits_with_one_line(tmp_path):
    import subprocess
    import sys

    from zoo.io import folder_lock

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from zoo.io import folder_lock\n"
                               f"with folder_lock('{tmp_path}', 'zoo matrix run'):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ZooError, match=f"{tmp_path} is in use by another zoo matrix run \\(pid {holder.pid} since"):
            with folder_lock(tmp_path, "zoo matrix run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path, "zoo matrix run"):  # a killed holder leaves no stale lock
        pass


def test_staging_folders_are_never_rows(tmp_path):
    from zoo.io import run_folders

    for name in ("cell-a", ".cell-b.partial", ".cell-c.old"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text("{}")
    assert [p.name for p in run_folders(tmp_path)] == ["cell-a"]


def test_empty_axes_list_is_an_error(tiny_matrix):
    import yaml


    path, _ = tiny_matrix
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["axes"] = []
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ZooError, match="key 'axes"):
        matrix.load_matrix("squad", "tiny", path)


def test_misspelt_key_names_the_unknown_and_the_missing_key():

    with pytest.raises(ZooError, match="key 'modifiers.0.final_sparsty': unknown key \\(missing: 'modifiers.0.final_sparsity'; misspelt\\?\\)"):
        parse_recipe({"modifiers": [{"type": "obs_pruning", "final_sparsty": 0.5}]}, "r.yaml")


def test_bench_quality_measures_every_variant_against_the_teacher(tiny_matrix, tmp_path):
    import json

    import yaml
    from rich.progress import Progress

    from tests.conftest import run_matrix
    from zoo import bench_quality
    from zoo.record import find_record

    path, data = tiny_matrix
    run_matrix(path, data, tmp_path / "cells", patterns=["*-s50-l2"])  # builds the teacher
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["pruning"] = {"type": "obs_pruning", "calibration_examples": 8, "block_size": 16, "rounds": 2, "end": 0.5}
    path.write_text(yaml.safe_dump(doc))
    output = tmp_path / "quality.json"
    with Progress(disable=True) as progress:
        record = bench_quality.quality("squad", "tiny", 1, 8, [0.5], [[0]], tmp_path / "variants", output, progress, str(data), path)
    rows = record["results"]
    assert record["complete"] and json.loads(output.read_text())["results"] == rows
    assert set(rows) == {"teacher", "magnitude-s50-0steps", "magnitude-s50-1steps-kd", "wanda-s50-0steps", "wanda-s50-1steps-kd",
                         "movement-s50-1steps-kd", "obs-s50-0steps", "obs-s50-1steps-kd",  # movement's scores need steps: no 0-step row
                         "layers-0-0steps", "layers-0-2steps-kd", "layers-search-0steps", "layers-search-2steps-kd"}
    assert rows["teacher"]["retention_pct"] == 100.0 and rows["teacher"]["steps"] == 0
    assert {rows[f"{m}-s50-0steps"]["measured_sparsity"] for m in ("magnitude", "wanda", "obs")} == {0.5}
    assert rows["movement-s50-1steps-kd"]["measured_sparsity"] == 0.5  # its one mask after step 0's gradients
    assert record["settings"]["variants"]["wanda-s50-0steps"]["modifiers"][0]["scorer"] == "wanda"
    assert rows["layers-0-2steps-kd"]["steps"] == 2 and rows["layers-0-0steps"]["layers_kept"] == [0]  # half the depth, twice the steps
    assert "scores" in rows["layers-search-0steps"]["layer_search"]

    # Variants recover with the matrix's training settings for their setting, except its step
    # count; one that ran with other settings runs again, the others are kept.
    doc["profiles"]["tiny"]["cell_train_by"] = {"sparsity": {0.5: {"learning_rate": 5.0e-4, "max_steps": 9}}}
    path.write_text(yaml.safe_dump(doc))
    finished = {name: find_record(tmp_path / "variants" / name).provenance.finished for name in rows}
    with Progress(disable=True) as progress:
        bench_quality.quality("squad", "tiny", 1, 8, [0.5], [[0]], tmp_path / "variants", output, progress, str(data), path)
    again = {name: find_record(tmp_path / "variants" / name) for name in rows}
    assert {name for name, record in again.items() if record.provenance.finished != finished[name]} == {
        f"{m}-s50-1steps-kd" for m in ("magnitude", "wanda", "movement", "obs")}
    trained = again["obs-s50-1steps-kd"].config["train"]
    assert trained["learning_rate"] == 5.0e-4 and trained["max_steps"] == 1
    assert again["layers-0-2steps-kd"].config["train"]["learning_rate"] == 1e-3  # cell_train's
    with pytest.raises(ZooError, match="--methods snip: no such method; choose from magnitude wanda movement obs layers"):
        bench_quality.quality("squad", "tiny", 1, 8, [0.5], [[0]], tmp_path / "variants", output, progress, str(data), path, ["snip"])


@pytest.mark.slow
def test_bench_distill_runs_each_option_beside_plain_kd(tiny_matrix, tmp_path):
    import yaml
    from rich.progress import Progress

    from tests.conftest import run_matrix
    from zoo import bench_quality

    path, data = tiny_matrix
    run_matrix(path, data, tmp_path / "cells", patterns=["*-s50-l2"])  # builds the teacher
    with Progress(disable=True) as progress:
        record = bench_quality.distillation("squad", "tiny", 2, 8, 2, 0.5, 0.8, tmp_path / "variants", tmp_path / "distill.json", progress,
                                            str(data), path)
        only_sparse = bench_quality.distillation("squad", "tiny", 2, 8, 2, 0.5, 0.8, tmp_path / "variants", tmp_path / "sparse.json", progress,
                                                 str(data), path, ["s80-*"])
        with pytest.raises(ZooError, match="--variants s50-kd: matches no variant; choose from layers2-kd "):
            bench_quality.distillation("squad", "tiny", 2, 8, 2, 0.5, 0.8, tmp_path / "variants", tmp_path / "x.json", progress, str(data),
                                       path, ["s50-kd"])
    rows, variants = record["results"], record["settings"]["variants"]
    assert record["complete"] and record["benchmark"] == "distill"
    # the tiny teacher has 2 layers: keeping both leaves Patient-KD an intermediate layer to compare
    assert list(rows) == ["teacher", "layers2-kd", "layers2-kd-embedding", "layers2-kd-two-step", "layers2-kd-pkd", "layers2-kd-theseus",
                          "layers2-kd-minilm", "width50-kd", "width50-kd-minilm", "width50-0steps", "width50-mask-tuned-0steps",
                          "width50-mask-tuned-kd", "s80-kd", "s80-kd-minilm"]
    assert [rows[n]["steps"] for n in rows] == [0, 2, 2, 2, 2, 2, 2, 4, 4, 0, 0, 4, 2, 2]  # half the width: twice the steps
    assert rows["s80-kd-minilm"]["measured_sparsity"] == pytest.approx(0.8, abs=0.01)
    assert list(only_sparse["results"]) == ["teacher", "s80-kd", "s80-kd-minilm"]
    assert only_sparse["results"]["s80-kd"] == rows["s80-kd"]  # found on disk, not trained again
    assert variants["layers2-kd-pkd"]["modifiers"][1]["pkd_cls"] == 100.0  # the option on top of the matrix's distillation
    assert variants["layers2-kd-pkd"]["modifiers"][1]["hidden_mse"] == yaml.safe_load(path.read_text())["profiles"]["tiny"]["distillation"]["hidden_mse"]
    from zoo.record import find_record

    trained = find_record(tmp_path / "variants" / "width50-kd-minilm").compression.recipe["modifiers"]
    assert [m["type"] for m in trained] == ["width_pruning", "distillation"] and trained[1]["value_relation"] == 1.0
    assert "mask_tuning_examples" not in trained[0]  # off, and left out of the dump as an option added later
    tuned = find_record(tmp_path / "variants" / "width50-mask-tuned-kd").compression
    assert tuned.recipe["modifiers"][0]["mask_tuning_examples"] == tuned.recipe["modifiers"][0]["calibration_examples"]
    assert len(tuned.width["mask_tuning"]["layers"]) == 2


def test_train_settings_by_setting(tiny_matrix):
    path, _ = tiny_matrix
    profile, _ = matrix.load_matrix("squad", "tiny", path)
    profile = matrix.MatrixProfile(**{**profile.model_dump(), "cell_train_by": {"layers": {1: {"learning_rate": 0.5}}}})
    cells = {c.layers: c for c in matrix.build_cells("squad", profile, 2, "test")}
    assert profile.train_config(cells[1], 7).learning_rate == 0.5 and profile.train_config(cells[1], 7).max_steps == 7
    assert profile.train_config(cells[2], None).learning_rate == profile.cell_train.learning_rate
    with pytest.raises(Exception, match="cell_train_by.layers.1.0: key 'learning_rte': unknown key"):
        matrix.MatrixProfile(**{**profile.model_dump(), "cell_train_by": {"layers": {1: {"learning_rte": 0.5}}}})


def test_a_compound_cell_drops_layers_prunes_distils_and_quantises(tiny_matrix, tmp_path):
    """One cell of every kind of compression the engine has: layer drop, then OBS on what is left,
    recovery with KD, and its int8 twin stored bitmask-sparse (zoo/sparse_storage.py)."""
    import json

    import yaml

    from tests.conftest import run_matrix
    from zoo import sparse_storage

    path, data = tiny_matrix
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"] |= {"axes": [{"sparsity": [0.5], "layers": [1], "distill": [True], "quant": ["none", "int8"]}],
                                "pruning": {"type": "obs_pruning", "calibration_examples": 8, "block_size": 16},
                                "quantization": {"quantize_embeddings": True}}
    path.write_text(yaml.safe_dump(doc))
    run_matrix(path, data, tmp_path / "cells")
    fp32_dir, int8_dir = tmp_path / "cells" / "tiny-bert0-l2-squad-s50-l1-kd", tmp_path / "cells" / "tiny-bert0-l2-squad-s50-l1-kd-int8"
    fp32 = json.loads((fp32_dir / "metrics.json").read_text())
    compression = fp32["compression"]
    assert [m["type"] for m in compression["recipe"]["modifiers"]] == ["obs_pruning", "layer_drop", "distillation"]
    assert compression["measured"]["num_hidden_layers"] == 1 and len(compression["layers_kept"]) == 1
    assert abs(compression["measured"]["sparsity"] - 0.5) < 0.005 and compression["obs_pruning"]["rounds"]
    assert compression["distillation"]["layer_map"] and fp32["train"]["steps"] > 0

    int8 = json.loads((int8_dir / "metrics.json").read_text())
    quantization = int8["compression"]["quantization"]
    assert int8["train"]["trained_in"] == str(fp32_dir) and quantization["quantize_embeddings"]
    sparse = quantization["sparse_int8_file"]
    assert sparse["bytes"] == (int8_dir / sparse_storage.SPARSE_INT8_FILE).stat().st_size < quantization["onnx_int8_bytes"]
    assert sparse_storage.load_onnx(int8_dir / sparse_storage.SPARSE_INT8_FILE) == (int8_dir / "model.int8.onnx").read_bytes()
