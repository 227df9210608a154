"""Doc-stride windows, training labels and n-best post-processing."""

import numpy as np
from datasets import Dataset

from tasks.squad import SquadAdapter, SquadConfig, best_answers, clean_rows, label_window, read_squad_json, tokenize_windows
from zoo.task import FeatureSet

FILLER = " ".join(f"Sentence number {i} talks about nothing in particular." for i in range(12))
CONTEXT = FILLER + " The secret code is zebra. " + FILLER


def long_example():
    start = CONTEXT.index("zebra")
    return Dataset.from_list([
        {"id": "long", "title": "t", "context": CONTEXT, "question": "What is the secret code?",
         "answers": {"text": ["zebra"], "answer_start": [start]}}
    ])


CFG = SquadConfig(max_seq_length=64, doc_stride=16, max_query_length=16)


def test_windows_overlap_and_cover_the_context(tokenizer):
    windows = tokenize_windows(tokenizer, long_example(), CFG, lambda n: None)
    assert len(windows) > 2
    assert all(len(w["input_ids"]) <= CFG.max_seq_length for w in windows)
    spans = [(w["offsets"][w["offsets"][:, 0] >= 0][0, 0], w["offsets"][:, 1].max()) for w in windows]
    assert spans[0][0] == 0 and spans[-1][1] == len(CONTEXT)
    for (_, prev_end), (next_start, _) in zip(spans, spans[1:]):
        assert next_start < prev_end  # consecutive windows overlap


def test_labels_point_at_the_answer_or_cls(tokenizer):
    example = long_example()
    start = example[0]["answers"]["answer_start"][0]
    hits = 0
    for w in tokenize_windows(tokenizer, example, CFG, lambda n: None):
        s, e = label_window(w["offsets"], start, "zebra")
        context = w["offsets"][w["offsets"][:, 0] >= 0]
        inside = context[0, 0] <= start and context[-1, 1] >= start + len("zebra")
        assert ((s, e) != (0, 0)) == inside
        if inside:
            hits += 1
            assert CONTEXT[w["offsets"][s, 0] : w["offsets"][e, 1]] == "zebra"
    assert hits >= 1


def test_long_question_is_cut_to_max_query_length(tokenizer):
    example = Dataset.from_list([{"id": "q", "title": "", "context": "short context", "question": "why " * 40,
                                  "answers": {"text": ["short"], "answer_start": [0]}}])
    (window,) = tokenize_windows(tokenizer, example, CFG, lambda n: None)
    question_tokens = int((window["token_type_ids"] == 0).sum()) - 2  # minus [CLS] and [SEP]
    assert question_tokens == CFG.max_query_length


def test_postprocessing_picks_best_span_across_windows(tokenizer):
    example = long_example()
    windows = tokenize_windows(tokenizer, example, CFG, lambda n: None)
    answer_start = CONTEXT.index("zebra")
    containing = [i for i, w in enumerate(windows) if label_window(w["offsets"], answer_start, "zebra") != (0, 0)]
    assert containing and containing[0] >= 1, "fixture must put the answer beyond the first window"
    rng = np.random.default_rng(0)
    starts = [rng.normal(0, 0.1, len(w["input_ids"])) for w in windows]
    ends = [rng.normal(0, 0.1, len(w["input_ids"])) for w in windows]
    # A strong decoy in the first window, a stronger true span later, and an even stronger
    # "span" on question tokens that must be ignored because it is not in the context.
    decoy = np.flatnonzero(windows[0]["offsets"][:, 0] >= 0)[3]
    starts[0][decoy], ends[0][decoy] = 5.0, 5.0
    starts[0][1], ends[0][1] = 50.0, 50.0
    target = containing[0]
    s, e = label_window(windows[target]["offsets"], answer_start, "zebra")
    starts[target][s], ends[target][e] = 8.0, 8.0
    features = FeatureSet([{"input_ids": w["input_ids"]} for w in windows],
                          {"example_index": [w["example_index"] for w in windows], "offsets": [w["offsets"] for w in windows]})
    predictions = best_answers(example, features, starts, ends, n_best_size=20, max_answer_length=30)
    assert predictions == {"long": "zebra"}

    # Spans longer than max_answer_length tokens are never chosen, whatever their score.
    last = containing[-1]
    offsets = windows[last]["offsets"]
    s, _ = label_window(offsets, answer_start, "zebra")
    far_end = s + 10
    assert offsets[far_end, 0] >= 0, "fixture: the long span must stay inside the context"
    starts[last][s], ends[last][far_end] = 100.0, 100.0
    long_span = CONTEXT[offsets[s, 0] : offsets[far_end, 1]]
    assert best_answers(example, features, starts, ends, 20, max_answer_length=30)["long"] == long_span
    assert best_answers(example, features, starts, ends, 20, max_answer_length=5)["long"] == "zebra"


def test_span_round_trip_on_real_dev(real_data_dir, tokenizer):
    """Gold token positions decoded through the offsets give back the gold text (>= 99.5%)."""
    cfg = SquadConfig(max_seq_length=384, doc_stride=128)
    examples, _ = clean_rows(read_squad_json(real_data_dir / "squad" / "dev-v1.1.json"))
    examples = Dataset.from_list(examples)
    answers, contexts = list(examples["answers"]), list(examples["context"])
    with_answer = exact = 0
    for w in tokenize_windows(tokenizer, examples, cfg, lambda n: None):
        gold = answers[w["example_index"]]
        s, e = label_window(w["offsets"], gold["answer_start"][0], gold["text"][0])
        if (s, e) == (0, 0):
            continue
        with_answer += 1
        exact += contexts[w["example_index"]][w["offsets"][s, 0] : w["offsets"][e, 1]] == gold["text"][0]
    ratio = exact / with_answer
    print(f"span round trip: {exact}/{with_answer} = {100 * ratio:.2f}%")
    assert with_answer > 10000 and ratio >= 0.995


def test_adapter_train_features_carry_labels(tokenizer):
    adapter = SquadAdapter("squad", CFG, tokenizer, None)
    features = adapter.train_features(long_example(), lambda n: None)
    assert {"input_ids", "token_type_ids", "start_positions", "end_positions"} == set(features.rows[0])
    assert any(r["start_positions"] > 0 for r in features.rows)
    assert any(r["start_positions"] == 0 for r in features.rows)
