"""Model cards (issue 26.4); fast: cards of committed records, parsed back by huggingface_hub itself.

huggingface_hub's only schema check that runs offline is its own strict parse (`RepoCard.validate`
POSTs to the Hub's /api/validate-yaml; test_hub.py's fake Hub checks that publish goes through it):
every card here is re-read with `ignore_metadata_errors=False` and its model-index round-tripped.
"""

import re
from pathlib import Path

import pandas as pd
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from tests.conftest import REPO, committed_record
from zoo import cards, results
from zoo.record import CellLabels

ORG, LOCAL = "zoo-test", "http://127.0.0.1:8090"
SQUAD = [REPO / "results/squad/matrix-cpu", REPO / "results/squad/matrix-cpu-supernet"]


@pytest.fixture(scope="module")
def squad_cards() -> dict[str, ModelCard]:
    """Every committed SQuAD cell's card as publish writes it (one table, siblings published together),
    with a local --matrix path and a local teacher folder in its record, as a real run has."""
    records = [r.model_copy(update={"provenance": r.provenance.model_copy(update={
        "command": "zoo matrix squad --profile cpu --matrix /home/me/zoo/recipes/m.yaml --root=runs/squad-matrix/cpu"})})
        for root in SQUAD for r in results.load_records(root)]
    df = results.table(records)
    rows = {row["cell"]: row for row in df.to_dict("records")}
    table = cards.linked_table(df, ORG, LOCAL)
    return {r.cell.name: cards.model_card(r, rows[r.cell.name], table, ORG, set(rows), LOCAL) for r in records}


def test_every_card_passes_huggingface_hubs_own_strict_parse(squad_cards):
    for name, card in squad_cards.items():
        reread = ModelCard(str(card), ignore_metadata_errors=False)
        model_name, evals = model_index_to_eval_results(reread.data.to_dict()["model-index"])
        assert model_name == name and {e.metric_type for e in evals} == {"exact_match", "f1"}


def test_the_model_index_says_the_scores_are_on_a_subset(squad_cards):
    for card in squad_cards.values():
        for result in card.data.eval_results:
            assert result.dataset_args == {"eval_examples": 2000, "split_examples": 10570}
            assert result.metric_name == f"{result.metric_type} (2000 of 10570 validation examples)"
        assert "on 2000 of 10570 SQuAD v1.1 validation examples" in card.text


def test_no_local_path_reaches_a_card(squad_cards):
    for card in squad_cards.values():
        text = str(card)
        assert "/home/me" not in text and "runs/" not in text and "recipes/" not in text
        assert "--matrix m.yaml --root=cpu" in text


@pytest.mark.parametrize("name, library, base, relation, tags", [
    ("minilm-l6-squad-s0-l6", "transformers", "sentence-transformers/all-MiniLM-L6-v2", "finetune", ["dense"]),
    ("minilm-l6-squad-s90-l6-kd", "transformers", "sentence-transformers/all-MiniLM-L6-v2", "finetune", ["sparse", "distilled"]),
    ("minilm-l6-squad-s0-l6-w50-kd", "onnx", "sentence-transformers/all-MiniLM-L6-v2", "finetune", ["width-pruned", "distilled"]),
    ("minilm-l6-squad-s0-l6-w50-kd-int8", "onnx", f"{ORG}/minilm-l6-squad-s0-l6-w50-kd", "quantized", ["width-pruned", "int8", "distilled"]),
    ("minilm-l6-squad-s0-l6-int8", "onnx", f"{ORG}/minilm-l6-squad-s0-l6", "quantized", ["int8"]),
    ("minilm-l6-squad-s0-l6-kd-sn", "transformers", "sentence-transformers/all-MiniLM-L6-v2", "finetune", ["supernet", "distilled"]),
    ("minilm-l6-squad-s0-l6-w50-kd-sn", "onnx", f"{ORG}/minilm-l6-squad-s0-l6-kd-sn", None, ["width-pruned", "supernet", "distilled"]),
])
def test_metadata_is_true_to_what_loads_the_scored_model(squad_cards, name, library, base, relation, tags):
    card = squad_cards[name]
    assert card.data.library_name == library and card.data.base_model == base
    assert card.data.to_dict().get("base_model_relation") == relation
    assert card.data.tags == ["zoo", "squad", *tags]


def test_wording_is_honest(squad_cards):
    assert "nothing compressed" in squad_cards["minilm-l6-squad-s0-l6"].text
    assert "then compressed" not in squad_cards["minilm-l6-squad-s0-l6"].text
    assert "this is its full width, nothing removed" in squad_cards["minilm-l6-squad-s0-l6-kd-sn"].text
    sliced = squad_cards["minilm-l6-squad-s0-l6-w50-kd-sn"].text
    assert f"out of `{ORG}/minilm-l6-squad-s0-l6-kd-sn`" in sliced
    assert "byte for byte the fp32 weights of `zoo-test/minilm-l6-squad-s0-l6`" in squad_cards["minilm-l6-squad-s0-l6-int8"].text
    assert "the PyPI package named `zoo` is an unrelated project" in squad_cards["minilm-l6-squad-s0-l6-w50-kd"].text


def test_the_table_links_to_the_endpoint_and_shows_no_nan(squad_cards):
    text = squad_cards["minilm-l6-squad-s0-l6"].text
    assert f"[minilm-l6-squad-s0-l6-kd-sn]({LOCAL}/{ORG}/minilm-l6-squad-s0-l6-kd-sn)" in text
    assert "huggingface.co/zoo-test" not in text and not re.search(r"\bnan\b", text)
    assert f"export HF_ENDPOINT={LOCAL}" in text
    assert not re.search(r"\bnan\b", cards.linked_table(pd.DataFrame({"cell": ["a"], "x": [float("nan")], "wall_time_s": [1.0]}), ORG, LOCAL))


def test_card_for_a_classification_cell_names_width_int8_speed_and_transplant():
    """Cards come from adapter facts, not SQuAD assumptions: the model-index carries the task's
    metrics, and the body says how to load it, that the model is int8, how fast it measured, and
    that minilm-zh is a vocabulary transplant."""
    cell = {"name": "minilm-zh-l6-tnews-s0-l6-w50-kd-int8", "matrix_profile": "cpu", "base_model": "minilm-zh", "base_layers": 6,
            "target_sparsity": 0.0, "layers": 6, "width": 0.5, "distilled": True, "quant": "int8", "init": "teacher"}
    record = committed_record(
        "clue/matrix-cpu/minilm-zh-l6-tnews-s0-l3-kd", cell=cell, metrics={"accuracy": 41.234, "examples": 2000},
        eval={"examples": 2000}, train={"examples": 2000, "steps": 63}, timings_s={"total": 80.0},
        compression={"measured": {"sparsity": 0.0, "num_hidden_layers": 6, "total_params": 9, "nonzero_params": 9},
                     "width": {"heads_kept": 6, "heads_total": 12, "neurons_kept": 768, "neurons_total": 1536},
                     "quantization": {"scheme": "int8_dynamic"}},
        bench={"threads": 1, "runs": {"latency_b1_s128": {"median_ms": 12.5}, "latency_b1_s384": {"median_ms": 40.0},
                                      "throughput_b32_s128": {"sequences_per_second": 80.0}},
               "size_bytes": 23_000_000, "flops": {"b1_s128": 1_500_000_000}},
    )
    card = cards.model_card(record, results.row_of(record), "(table)", ORG)
    assert [(r.metric_type, r.metric_value, r.dataset_type) for r in card.data.eval_results] == [("accuracy", 41.23, "clue/clue")]
    assert card.data.base_model == f"{ORG}/minilm-zh-l6-tnews-s0-l6-w50-kd" and card.data.pipeline_tag == "text-classification"
    text = str(card)
    assert "vocabulary transplant" in text and "model.int8.onnx" in text
    assert "ONNX Runtime int8, 1 CPU thread(s)): 12.5 ms at batch 1 x 128 tokens" in text
    assert card.data.tags == ["zoo", "tnews", "width-pruned", "int8", "distilled"]
    assert 'path = snapshot_download("zoo-test/minilm-zh-l6-tnews-s0-l6-w50-kd-int8", allow_patterns=["*.json", "model.int8.onnx"])' in text
    assert "huggingface.co" not in text.split("## Use")[1].split("## Reproduce")[0], "the default endpoint needs no HF_ENDPOINT line"


@pytest.mark.parametrize("changes, snippet", [
    ({}, "AutoModelForQuestionAnswering.from_pretrained(path)"),
    ({"layers": 3}, "AutoModelForQuestionAnswering.from_pretrained(path)"),
    ({"width": 0.5, "distilled": True}, 'ort.InferenceSession(f"{path}/model.onnx")'),
    ({"width": 0.5}, "stock `from_pretrained` refuses these weights"),
    ({"quant": "int8"}, 'ort.InferenceSession(f"{path}/model.int8.onnx")'),
])
def test_usage_loads_what_was_scored(changes, snippet):
    cell = CellLabels.model_validate({"name": "x", "matrix_profile": "cpu", "base_model": "minilm", "init": "teacher", "target_sparsity": 0.0,
                                      "layers": 6, "base_layers": 6, "width": 1.0, "quant": "none", "distilled": False, **changes})
    assert snippet in "\n".join(cards.usage(cell, "question-answering", "org/x"))


def test_a_path_keeps_only_its_last_part_and_a_hub_id_stays():
    assert cards.public("/abs/teacher-squad") == "teacher-squad" and cards.public("runs/squad/dense-cpu") == "dense-cpu"
    assert cards.public("bert-base-uncased") == "bert-base-uncased" and cards.public("org/name") == "org/name"
    assert cards.public_command("zoo finetune squad --model ./m --output=/tmp/x") == "zoo finetune squad --model m --output=x"
    assert Path(cards.public("~/m")).name == "m"
    unbalanced = cards.public_command("zoo matrix squad --root /a/b 'unbalanced")
    assert unbalanced.startswith("zoo matrix squad --root b ") and "/a/b" not in unbalanced
