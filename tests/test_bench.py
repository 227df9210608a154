"""The training-throughput benchmark runs both pipelines on the same features and writes JSON."""

import json

from rich.progress import Progress

from zoo.bench import train_throughput


def test_train_throughput_writes_comparable_results(tiny_bert_dir, squad_data_root, tmp_path):
    out = tmp_path / "bench.json"
    with Progress(disable=True) as progress:
        record = train_throughput(str(tiny_bert_dir), str(squad_data_root), steps=3, warmup_steps=1, batch_size=4,
                                  max_seq_length=128, doc_stride=32, output=str(out), progress=progress)
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    base, ours = record["results"]["baseline_pad_to_max_random"], record["results"]["zoo_dynamic_length_grouped"]
    assert base["features"] == ours["features"] == 12
    assert base["mean_padded_length"] == 128
    assert ours["mean_padded_length"] < 128 and ours["real_token_fraction"] > base["real_token_fraction"]
    speedup = ours["features_per_second"] / base["features_per_second"]
    assert record["comparison"]["speedup_features_per_second"] == round(speedup, 3)
    assert record["comparison"]["met"] == (speedup >= record["comparison"]["target"])
    assert {"date", "machine", "libraries"} <= set(record["provenance"])


def test_compression_step_cost_compares_three_variants(tiny_bert_dir, squad_data_root, tmp_path, monkeypatch):
    from zoo.bench import compression_step_cost

    monkeypatch.chdir(tmp_path)
    with Progress(disable=True) as progress:
        record = compression_step_cost(str(tiny_bert_dir), str(tiny_bert_dir), str(squad_data_root), steps=3, warmup_steps=1,
                                       batch_size=4, max_seq_length=128, doc_stride=32, output=str(tmp_path / "c.json"), progress=progress)
    assert set(record["results"]) == {"plain_finetune", "prune_kd_cached_teacher", "prune_kd_live_teacher"}
    assert len(record["results"]["plain_finetune"]["seconds_per_step_by_round"]) == 2
    assert "teacher_cache_hit" in record["results"]["prune_kd_cached_teacher"]["best_round"]
    per_step = {name: r["best_round"]["seconds_per_step"] for name, r in record["results"].items()}
    assert record["comparison"]["cached_kd_step_over_plain_step"] == round(per_step["prune_kd_cached_teacher"] / per_step["plain_finetune"], 3)
    assert all(r["best_round"]["seconds_per_step"] == min(r["seconds_per_step_by_round"]) for r in record["results"].values())
    assert (tmp_path / "c.json").is_file()



def test_train_precision_compares_fp32_and_bf16_in_interleaved_rounds(tiny_bert_dir, squad_data_root, tmp_path):
    from zoo.bench import train_compare

    with Progress(disable=True) as progress:
        record = train_compare("precision", str(tiny_bert_dir), str(squad_data_root), steps=2, warmup_steps=1, batch_size=4,
                               max_seq_length=128, doc_stride=32, output=str(tmp_path / "p.json"), progress=progress, rounds=2)
    fp32, bf16 = record["results"]["fp32"], record["results"]["bf16_autocast"]
    assert len(fp32["features_per_second_by_round"]) == len(bf16["features_per_second_by_round"]) == 2
    assert fp32["trained_in"] == "no" and bf16["trained_in"] == record["comparison"]["zoo_trains_bf16_requests_in"]
    assert bf16["trained_in"] == ("bf16" if record["settings"]["cpu"]["bf16_hardware"] else "no")
    assert fp32["spread"][0] <= fp32["features_per_second_median"] <= fp32["spread"][1]
    assert record["comparison"]["loss_max_abs_diff"] < 0.1  # same start, same batches: bf16 autocast tracks fp32
    assert "isa_flags" in record["settings"]["cpu"] and (tmp_path / "p.json").is_file()


def test_bf16_on_a_cpu_without_bf16_hardware_trains_fp32(monkeypatch):
    from zoo import engines, train

    monkeypatch.setattr(engines, "cpu_facts", lambda: {"bf16_hardware": False})
    assert train.effective_precision("bf16") == "no" and train.effective_precision("no") == "no"
    monkeypatch.setattr(engines, "cpu_facts", lambda: {"bf16_hardware": True})
    assert train.effective_precision("bf16") == "bf16"
