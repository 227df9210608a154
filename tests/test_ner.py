"""NER adapter: both local formats, label alignment, seqeval strict IOB2 scores, a distilled cell."""

import numpy as np
import pytest
from datasets import Dataset

from tasks.ner import NER_TASKS, NerAdapter, NerConfig, read_token_file
from tests.conftest import teacher_then_cell
from zoo.batching import IGNORE_INDEX
from zoo.errors import ZooError
from zoo.task import FeatureSet, LoadReport

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

Bad NNP B-NP B-WHATEVER
line NN I-NP O

-DOCSTART- -X- -X- O

Too few columns
Next NN I-NP O
"""


def test_conll_reader_docstart_blank_lines_and_bad_sentences(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL)
    report = LoadReport()
    labels = NER_TASKS["conll2003"].labels
    sentences = read_token_file(path, 4, labels, report)
    assert [s["tokens"] for s in sentences] == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    assert sentences[0]["tags"] == ["B-ORG", "O", "B-MISC", "O"]
    assert report.as_dict() == {"kept": 2, "repaired": 0, "skipped": {"unknown tag": 1, "malformed line": 1}}


@pytest.mark.parametrize("text, needle", [
    ("EU NNP B-NP S-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\nBonn NNP B-NP S-LOC\n",
     "2 of 3 sentences use tags outside"),  # BIOES: most sentences unknown
    ("EU NNP B-NP S-ORG\n\nBonn NNP B-NP S-LOC\n", "seen: S-ORG (1x), S-LOC (1x)"),  # every sentence unknown
])
def test_ner_file_in_another_tag_set_is_one_error(tmp_path, text, needle):
    path = tmp_path / "train.txt"
    path.write_text(text)
    with pytest.raises(ZooError, match="convert the file to IOB2") as err:
        read_token_file(path, 4, NER_TASKS["conll2003"].labels, LoadReport())
    assert needle in str(err.value) and str(path) in str(err.value)


def test_msra_one_character_per_line(tmp_path):
    path = tmp_path / "train.bio"
    path.write_text("中\tB-ORG\n共\tI-ORG\n说\tO\n\n北\tB-LOC\n京\tI-LOC\n")
    sentences = read_token_file(path, 2, NER_TASKS["msra_ner"].labels, LoadReport())
    assert sentences == [{"tokens": ["中", "共", "说"], "tags": ["B-ORG", "I-ORG", "O"]}, {"tokens": ["北", "京"], "tags": ["B-LOC", "I-LOC"]}]


def test_file_in_another_format_is_one_clear_error(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text('{"tokens": ["not", "conll"]}\n{"x": 1}\n')
    with pytest.raises(ZooError, match=r"train.txt: 2 of 2 lines do not have 4 whitespace-separated fields"):
        read_token_file(path, 4, NER_TASKS["conll2003"].labels, LoadReport())


def ner(tokenizer, **config):
    return NerAdapter("conll2003", NerConfig(**config), tokenizer, None)


def test_first_subtoken_labelled_rest_ignored(tokenizer):
    examples = Dataset.from_list([{"id": "s1", "tokens": ["Blackburnshire", "rejects"], "tags": ["B-LOC", "O"]}])
    pieces = tokenizer.tokenize("Blackburnshire")
    assert len(pieces) > 1  # the test needs a word split into several pieces
    labels = NER_TASKS["conll2003"].labels
    row = ner(tokenizer).train_features(examples, lambda n: None).rows[0]
    expected = [IGNORE_INDEX, labels.index("B-LOC")] + [IGNORE_INDEX] * (len(pieces) - 1) + [labels.index("O"), IGNORE_INDEX]
    assert row["labels"].tolist() == expected
    every = ner(tokenizer, label_all_subtokens=True).train_features(examples, lambda n: None).rows[0]
    assert every["labels"].tolist()[2 : 1 + len(pieces)] == [labels.index("I-LOC")] * (len(pieces) - 1)


def one_hot_logits(words: list[int], tags: list[str]) -> np.ndarray:
    """Per-piece logits whose argmax at each word's first piece is that word's tag."""
    labels = NER_TASKS["conll2003"].labels
    logits = np.zeros((len(words), len(labels)), dtype=np.float32)
    for position, word in enumerate(words):
        logits[position, labels.index(tags[word] if word >= 0 else "O")] = 5.0
    return logits


def test_seqeval_strict_scores_with_boundary_errors(tokenizer):
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER"]]
    predicted = [["B-PER", "O", "O", "B-LOC"],  # PER boundary wrong, LOC right
                 ["I-PER", "I-PER"]]  # no B-: not an entity in strict IOB2 (conlleval mode would count it)
    examples = Dataset.from_list([{"id": f"s{i}", "tokens": ["w"] * len(t), "tags": t} for i, t in enumerate(gold)])
    words = [np.array([-1, 0, 1, 2, 3, -1]), np.array([-1, 0, 1, -1])]
    outputs = {"logits": [one_hot_logits(w, p) for w, p in zip(words, predicted)]}
    metrics, predictions = ner(tokenizer).score(examples, FeatureSet([{}, {}], {"word_ids": words}), outputs)
    # gold entities: PER, LOC, PER; predicted: PER (wrong span), LOC -> TP 1, precision 1/2, recall 1/3
    assert metrics["precision"] == pytest.approx(50.0) and metrics["recall"] == pytest.approx(100 / 3)
    assert metrics["f1"] == pytest.approx(100 * 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert metrics["f1_LOC"] == pytest.approx(100.0) and metrics["f1_PER"] == 0.0 and metrics["f1_MISC"] == 0.0
    assert predictions["s1"] == "I-PER I-PER"


def test_truncated_words_are_predicted_o_and_counted(tokenizer):
    examples = Dataset.from_list([{"id": "s", "tokens": ["Paris", "is", "big"], "tags": ["B-LOC", "O", "B-MISC"]}])
    words = [np.array([-1, 0, 1, -1])]  # "big" fell off the end
    metrics, predictions = ner(tokenizer).score(examples, FeatureSet([{}], {"word_ids": words}),
                                                {"logits": [one_hot_logits(words[0], ["B-LOC", "O", "B-MISC"])]})
    assert predictions["s"] == "B-LOC O O" and metrics["words_not_predicted"] == 1 and metrics["recall"] == 50.0


@pytest.mark.slow
def test_distilled_ner_cell_end_to_end(tiny_bert_dir, tmp_path, monkeypatch):
    """Token classification through the same engine: per-token KD over real tokens only."""
    from transformers import AutoModelForTokenClassification

    monkeypatch.chdir(tmp_path)
    sentence = "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
    for name in ("train.txt", "valid.txt"):
        (tmp_path / "data/conll2003").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data/conll2003" / name).write_text("-DOCSTART- -X- -X- O\n\n" + "\n".join([sentence] * 24))

    pruning = {"type": "magnitude_pruning", "final_sparsity": 0.5, "start": 0.0, "end": 0.5, "update_every": 1}
    _, record = teacher_then_cell("conll2003", tiny_bert_dir, tmp_path / "data", tmp_path, [pruning], batch_size=8, epochs=1)
    assert {"f1", "precision", "recall", "f1_PER", "f1_ORG", "f1_LOC", "f1_MISC"} <= set(record.metrics)
    assert np.isfinite(record.train.final_loss_mean50)
    assert AutoModelForTokenClassification.from_pretrained(tmp_path / "cell", use_safetensors=True).config.num_labels == 9


@pytest.mark.data
@pytest.mark.parametrize("task, train, dev", [("conll2003", 14041, 3250), ("msra_ner", 45000, 3442)])
def test_real_files_load_completely(real_data_dir, task, train, dev):
    loader = NerAdapter(task, NerConfig(), None, real_data_dir)
    (train_rows, train_report), (dev_rows, dev_report) = loader.load("train"), loader.load("dev")
    assert (len(train_rows), len(dev_rows)) == (train, dev)
    assert train_report.skipped == {} and dev_report.skipped == {}
