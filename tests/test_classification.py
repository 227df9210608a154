"""GLUE and CLUE adapters: metrics against hand-computed values, the local formats' quirks,
bad rows counted, wrong files refused, and a compressed + distilled cell through the engine."""

import json

import numpy as np
import pytest

from tasks.classification import ClassificationConfig
from tasks.metrics import accuracy, f1, matthews_correlation, pearson, spearmanr
from tests.conftest import teacher_then_cell
from zoo.adapters import get_adapter
from zoo.errors import ZooError
from zoo.task import FeatureSet


def test_metrics_against_hand_computed_values():
    gold, predicted = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]  # TP 2, FN 1, TN 1, FP 1
    assert accuracy(gold, predicted) == pytest.approx(60.0)
    assert f1(gold, predicted) == pytest.approx(100 * 2 / 3)  # precision = recall = 2/3
    assert matthews_correlation(gold, predicted) == pytest.approx(100 / 6)  # (2*1 - 1*1) / sqrt(3*3*2*2)
    # deviations (-1.5, -.5, .5, 1.5) and (-3.25, -1.25, .75, 3.75): 11.5 / sqrt(5 * 26.75)
    assert pearson([1, 2, 3, 4], [2, 4, 6, 9]) == pytest.approx(100 * 11.5 / np.sqrt(5 * 26.75))
    assert spearmanr([1, 2, 3, 4], [2, 4, 6, 9]) == pytest.approx(100.0)
    assert spearmanr([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(80.0)  # 1 - 6 * 2 / (4 * 15)
    assert pearson([1, 2, 3], [5, 5, 5]) == 0.0  # constant prediction: undefined, reported as 0


def adapter(task, root, tokenizer=None):
    return get_adapter(task)(task, ClassificationConfig(), tokenizer, root)


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)


def test_cola_has_no_header_and_bad_rows_are_counted(tmp_path):
    lines = ["gj04\t1\t\tThe sailors rode the breeze.", "gj04\t0\t*\tThe more books.", "gj04\t7\t\tUnknown label row.",
             "gj04\t1\t", "gj04\t1\t\t   ", "cj99\t0\t*\tAnother bad one."]
    write(tmp_path / "glue/CoLA/train.tsv", "\n".join(lines) + "\n")
    examples, report = adapter("cola", tmp_path).load("train")
    assert examples["text_a"] == ["The sailors rode the breeze.", "The more books.", "Another bad one."]
    assert examples["label"] == [1, 0, 0]
    assert report.as_dict() == {"kept": 3, "repaired": 0, "skipped": {"unknown label": 1, "missing column": 1, "empty text": 1}}


def test_mrpc_byte_order_mark_and_bare_quotes(tmp_path):
    text = ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
            '1\t1\t2\tHe said " it fits .\t" It fits , he said .\n'
            "0\t3\t4\tA first sentence .\tA second one .\n")
    write(tmp_path / "glue/MRPC/train.tsv", text, encoding="utf-8-sig")
    examples, report = adapter("mrpc", tmp_path).load("train")
    assert examples["text_a"][0] == 'He said " it fits .' and examples["text_b"][0] == '" It fits , he said .'
    assert examples["label"] == [1, 0] and report.kept == 2


def test_stsb_scores_are_floats_and_regression_distills_with_mse(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    write(tmp_path / "glue/STS-B/dev.tsv", header + "0\tg\tf\ty\t0\tn\tn\tA man sings.\tA man is singing.\t4.750\n"
          "1\tg\tf\ty\t1\tn\tn\tA cat.\tA dog.\tn/a\n" + "2\tg\tf\ty\t2\tn\tn\tRain.\tSun.\t0.2\n")
    stsb = adapter("stsb", tmp_path)
    examples, report = stsb.load("dev")
    assert examples["label"] == [4.75, 0.2] and report.skipped == {"score is not a number": 1}
    assert stsb.logit_loss == "mse" and adapter("sst2", tmp_path).logit_loss == "kl"


def test_wrong_file_is_one_clear_error(tmp_path):
    write(tmp_path / "glue/SST-2/train.tsv", '{"sentence": "json, not tsv", "label": 1}\n')
    with pytest.raises(ZooError, match=r"SST-2/train.tsv: header has no column 'sentence'"):
        adapter("sst2", tmp_path).load("train")
    write(tmp_path / "glue/CoLA/train.tsv", "a,b,c\nd,e,f\n")  # not tab-separated at all
    with pytest.raises(ZooError, match=r"CoLA/train.tsv: 0 usable rows, 2 bad \(mostly: missing column\)"):
        adapter("cola", tmp_path).load("train")
    with pytest.raises(ZooError, match=r"glue/QNLI/train.tsv not found"):
        adapter("qnli", tmp_path).data_files("train")


def test_mnli_dev_is_two_files_scored_separately(tmp_path):
    header = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\t"
              "sentence1\tsentence2\tlabel1\tgold_label\n")
    row = "0\t1\t1\tg\tx\tx\tx\tx\tPremise {n}.\tHypothesis {n}.\tneutral\t{label}\n"
    write(tmp_path / "glue/MNLI/dev_matched.tsv", header + row.format(n=1, label="neutral") + row.format(n=2, label="entailment"))
    write(tmp_path / "glue/MNLI/dev_mismatched.tsv", header + row.format(n=3, label="contradiction"))
    mnli = adapter("mnli", tmp_path)
    examples, _ = mnli.load("dev")
    assert examples["subset"] == ["matched", "matched", "mismatched"] and examples["label"] == [1, 0, 2]
    logits = [np.array(v, dtype=np.float32) for v in ([0, 5, 0], [0, 5, 0], [0, 0, 5])]  # right, wrong, right
    metrics, predictions = mnli.score(examples, FeatureSet([{}] * 3), {"logits": logits})
    assert metrics["accuracy_matched"] == 50.0 and metrics["accuracy_mismatched"] == 100.0
    assert list(predictions.values()) == ["neutral", "neutral", "contradiction"]


def test_clue_csv_train_json_dev_and_missing_gold_labels(tmp_path):
    write(tmp_path / "clue/afqmc/train.csv", "sentence1,sentence2,label\n花呗怎么还,借呗怎么还,0\n\"逗号,在里面\",花呗,1\n")
    write(tmp_path / "clue/afqmc/dev.json", json.dumps({"sentence1": "甲", "sentence2": "乙", "label": "1"}, ensure_ascii=False) + "\n")
    afqmc = adapter("afqmc", tmp_path)
    train, report = afqmc.load("train")
    assert train["text_a"] == ["花呗怎么还", "逗号,在里面"] and train["label"] == [0, 1] and report.kept == 2
    assert afqmc.load("dev")[0]["label"] == [1]
    lines = [{"sentence1": "前提", "sentence2": "假设", "label": "neutral"}, {"sentence1": "前提", "sentence2": "假设", "label": "-"},
             {"sentence1": "前提", "sentence2": "假设", "label": "entailment"}]
    write(tmp_path / "clue/ocnli/dev.json", "\n".join(json.dumps(l, ensure_ascii=False) for l in lines) + "\nnot json\n")
    examples, report = adapter("ocnli", tmp_path).load("dev")
    assert examples["label"] == [1, 0]
    assert report.as_dict() == {"kept": 2, "repaired": 0, "skipped": {"no gold label": 1, "not a JSON object": 1}}


def test_cluewsc_pairs_passage_with_spans(tmp_path):
    record = {"target": {"span2_index": 5, "span1_index": 0, "span1_text": "小明", "span2_text": "他"}, "idx": 1, "label": "true", "text": "小明说他饿了。"}
    write(tmp_path / "clue/cluewsc2020/dev.json", json.dumps(record, ensure_ascii=False) + "\n")
    examples, _ = adapter("cluewsc2020", tmp_path).load("dev")
    assert examples[0]["text_a"] == "小明说他饿了。" and examples[0]["text_b"] == "他: 小明" and examples[0]["label"] == 0


@pytest.mark.slow
def test_regression_cell_with_distillation_end_to_end(tiny_bert_dir, tmp_path, monkeypatch):
    """STS-B through the same engine: pruning + layer drop + KD (MSE on the score), saved and reloaded."""
    from transformers import AutoModelForSequenceClassification

    monkeypatch.chdir(tmp_path)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    rows = [f"{i}\tg\tf\ty\t{i}\tn\tn\tA man number {i} sings.\tA person {i % 5} sings.\t{i % 6}.0" for i in range(40)]
    for split in ("train", "dev"):
        write(tmp_path / f"data/glue/STS-B/{split}.tsv", header + "\n".join(rows) + "\n")

    modifiers = [{"type": "magnitude_pruning", "final_sparsity": 0.5, "start": 0.0, "end": 0.5, "update_every": 1},
                 {"type": "layer_drop", "keep": [0]}]
    teacher, record = teacher_then_cell("stsb", tiny_bert_dir, tmp_path / "data", tmp_path, modifiers, batch_size=8, epochs=1)
    assert set(teacher.metrics) == {"pearson", "spearmanr", "examples"}
    assert record.compression.measured.num_hidden_layers == 1
    assert abs(record.measured_sparsity - 0.5) < 0.01
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cell", use_safetensors=True)
    assert reloaded.config.num_labels == 1 and reloaded.config.problem_type == "regression"
    assert np.isfinite(record.train.final_loss_mean50)
    assert set(record.metrics) == {"pearson", "spearmanr", "examples"}


@pytest.mark.data
@pytest.mark.parametrize("task, train, dev, skipped", [
    ("cola", 8551, 1043, {}), ("sst2", 67349, 872, {}), ("mrpc", 3668, 408, {}), ("stsb", 5749, 1500, {}),
    ("rte", 2490, 277, {}), ("wnli", 635, 71, {}),
    ("tnews", 53360, 10000, {}), ("afqmc", 34334, 4316, {}), ("cluewsc2020", 1244, 304, {}),
    ("ocnli", 50437, 2950, {"no gold label": 49 + 50}),
])
def test_real_files_load_completely(real_data_dir, task, train, dev, skipped):
    """Every row of the offline GLUE/CLUE files is read (counts from ../shared/data/README.md)."""
    loader = adapter(task, real_data_dir)
    (train_rows, train_report), (dev_rows, dev_report) = loader.load("train"), loader.load("dev")
    assert (len(train_rows), len(dev_rows)) == (train, dev)
    merged = train_report
    merged.merge(dev_report)
    assert merged.skipped == skipped
