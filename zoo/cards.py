"""A published cell's model card (`huggingface_hub.ModelCard`), from the same results row as the tables.

Metadata: license; `base_model` with `base_model_relation` (an int8 cell is `quantized` from its
fp32 sibling's repo; a trained cell a `finetune` of the Hub base model; a width sliced out of a
supernet names the supernet's repo, with no relation, as the Hub has no value for slicing);
`library_name` the library that loads what was scored (`transformers` where stock transformers
loads it, `onnx` for int8 cells and for width-pruned ones, which ship an fp32 `model.onnx`); tags
saying what was done; a `model-index` whose dataset args and metric names say on how many of the
split's examples the scores are. The body says what was done, how to load the
scored model, the command that trained it and its limits, and links the sibling table to the
configured endpoint. No path of the publishing machine reaches a card.

Loading, as chosen here: every snippet downloads with `snapshot_download` and loads from the local
folder, which works on the Hub and on a local hub alike (`make hub-serve` runs olah with the Hub's 404
for a repo's absent paths, zoo/olah_serve.py, so `from_pretrained(repo_id)` works there too); no
snippet uses the question-answering `pipeline`,
which transformers 5.x removed. Dense, sparse and layer-dropped cells load with stock
`AutoModelFor*.from_pretrained`; int8 cells run their `model.int8.onnx` with ONNX Runtime (what
their scores come from); width-pruned cells run their fp32 `model.onnx` (hub.export_onnx) or load with
zoo's loader: stock `from_pretrained` refuses their weights (size mismatch), though with
`ignore_mismatched_sizes=True` it would re-initialise them (not prevented: said on the card).
test_hub.py runs each kind's snippet without zoo importable against olah and compares its outputs.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from zoo import sparse_storage
from zoo.adapters import get_adapter
from zoo.record import CellLabels, Record

TRANSPLANT = "minilm-zh"
LICENSE = "apache-2.0"
HUB = "https://huggingface.co"
AUTO_CLASS = {"question-answering": "AutoModelForQuestionAnswering", "text-classification": "AutoModelForSequenceClassification",
              "token-classification": "AutoModelForTokenClassification"}


def eval_results(row: dict, card: dict, record: Record) -> list[EvalResult]:
    """The model-index: each metric, saying on how many of the split's examples it was measured."""
    dev = record.data.get("dev")
    used, available = row["dev_examples"], dev.available_examples if dev else row["dev_examples"]
    scope = f"{used} of {available} {card['dataset_split']} examples"
    return [
        EvalResult(task_type=card["task_type"], dataset_type=card["dataset_type"], dataset_name=card["dataset_name"],
                   dataset_config=card["dataset_config"], dataset_split=card["dataset_split"],
                   dataset_args={"eval_examples": int(used), "split_examples": int(available)},
                   metric_type=metric, metric_name=f"{metric} ({scope})", metric_value=float(row[metric]))
        for metric in card["metrics"]
    ]


def kind_tags(cell: CellLabels) -> list[str]:
    """What was done to the model, one tag each; 'dense' only when nothing was."""
    tags = [tag for tag, done in (("sparse", cell.sparsity > 0), ("layer-dropped", cell.layers < cell.base_layers),
                                  ("width-pruned", cell.width < 1), ("supernet", cell.supernet), ("int8", cell.quant != "none"))
            if done]
    return (tags or ["dense"]) + (["distilled"] if cell.distill else [])


def library(cell: CellLabels) -> str:
    """The library a user loads the scored model with: ONNX Runtime for int8 cells (their scores are
    the ONNX model's) and width-pruned ones (stock transformers cannot build the sliced shapes)."""
    return "onnx" if cell.quant != "none" or cell.width < 1 else "transformers"


def public(text: str) -> str:
    """A local path as a card may show it: its last part only (a Hub id such as org/name stays)."""
    local = text.startswith(("/", "~", "./", "../")) or text.count("/") > 1 or Path(text).exists()
    return Path(text).name if local else text


def public_command(command: str) -> str:
    """The training command with every path argument reduced to its last part."""
    def arg(token: str) -> str:
        flag, eq, value = token.partition("=") if token.startswith("--") else ("", "", token)
        return f"{flag}{eq}{public(value)}" if eq else public(token)

    try:
        tokens = shlex.split(command)
    except ValueError:  # unbalanced quotes in a hand-launched command: its words as they stand
        tokens = command.split()
    return shlex.join(arg(t) for t in tokens)


def _hub_base(model: str) -> str | None:
    """The Hub id of the base model, never a path on the machine that trained it."""
    if model in ("minilm", TRANSPLANT):
        return "sentence-transformers/all-MiniLM-L6-v2"
    return None if public(model) != model else model


def lineage(record: Record, org: str, published: set[str]) -> tuple[str | None, str | None]:
    """(base_model, base_model_relation), see the module docstring."""
    cell = record.cell
    if cell.fp32_sibling:
        return f"{org}/{cell.fp32_sibling}", "quantized"
    source = Path(record.model).name
    if cell.supernet and cell.width < 1:
        return (f"{org}/{source}" if source in published else None), None
    base = _hub_base(cell.base_model)
    return base, "finetune" if base else None


def what_was_done(cell: CellLabels) -> str:
    start = "started from the dense fine-tuned teacher" if cell.init == "teacher" else "fine-tuned from the base model"
    if cell.supernet and cell.width >= 1:
        return f"{start}, then trained as a width supernet (DynaBERT); this is its full width, nothing removed."
    if kind_tags(cell) == ["dense"]:
        return f"{start}; nothing compressed (the matrix's dense reference row)."
    return f"{start}, then compressed ({', '.join(kind_tags(cell))})."


def model_card(record: Record, row: dict, table_md: str, org: str, published: set[str] = frozenset(), endpoint: str = HUB) -> ModelCard:
    """The card: metadata (see the module docstring) and a body saying what was done, how to load
    the scored model, the sibling table, how to reproduce it and its limits."""
    hub = get_adapter(record.task).hub_card(record.task)
    cell, compression = record.cell, record.compression
    name = cell.name
    base_model, relation = lineage(record, org, published)
    data = ModelCardData(
        license=LICENSE, base_model=base_model, datasets=[hub["dataset_type"]], tags=["zoo", record.task, *kind_tags(cell)],
        pipeline_tag=hub["pipeline_tag"], library_name=library(cell), model_name=name, eval_results=eval_results(row, hub, record),
    )
    if relation:
        data.base_model_relation = relation  # a Hub field huggingface_hub has no argument for
    distill, width, measured = compression.distillation, compression.width, compression.measured
    source = Path(record.model).name
    teacher = "the dense fine-tuned teacher" + (f" (the matrix's dense row: `{org}/{dense_row(cell)}`)" if dense_row(cell) in published else "")
    lines = [
        f"# {name}", "",
        f"A {record.task} model from the zoo matrix (profile `{cell.matrix_profile}`): {public(cell.base_model)} ({cell.base_layers} layers), "
        + what_was_done(cell), "",
        f"- measured sparsity over the pruned encoder weights: {100 * measured.sparsity:.2f}% (target {100 * cell.sparsity:.0f}%)",
        f"- layers kept: {compression.layers_kept or 'all'} → {measured.num_hidden_layers} layers",
        *([f"- width: {width['heads_kept']} of {width['heads_total']} attention heads and {width['neurons_kept']} of "
           f"{width['neurons_total']} FFN neurons per layer, physically sliced (config key `zoo_attention_heads`); see Use"] if width else []),
        *([f"- a width of a supernet: sliced, without further training, out of `{org}/{source}`, which trained the widths "
           f"{width['supernet_widths']} together (DynaBERT); its own row has that training"] if width and "supernet_widths" in width else []),
        *(["- int8: `model.int8.onnx`, ONNX Runtime dynamic quantisation of these weights (per-channel int8 MatMul weights); "
           f"the scores below are the int8 model's; `model.safetensors` is byte for byte the fp32 weights of `{org}/{cell.fp32_sibling}`"]
          if compression.quantization else []),
        *([f"- speed ({'ONNX Runtime int8' if row['quant'] != 'none' else 'PyTorch fp32'}, {record.bench.threads} CPU thread(s)): "
           f"{row['latency_b1_s128_ms']:.1f} ms at batch 1 x 128 tokens, {row['latency_b1_s384_ms']:.1f} ms at 1 x 384, "
           f"{row['throughput_b32_s128']:.1f} sequences/s at 32 x 128; {row['size_mb']:.1f} MB; {row['gflops_s128']:.2f} GFLOPs per 128-token sequence"]
          if record.bench and pd.notna(row.get("latency_b1_s128_ms")) else []),
        f"- parameters: {measured.total_params:,} total, {measured.nonzero_params:,} non-zero",
        *(["- smaller files: " + ", ".join(
            f"`{f.file}` {f.bytes / 1e6:.1f} MB ({100 * f.ratio_to_dense:.1f}% of `model.safetensors`, {f.reload})"
            for f in record.size_on_disk.forms.values()) + "; the pruned zeros are a bitmask (see Use)"] if record.size_on_disk else []),
        "- distillation: " + (f"from {teacher}, KL at T={distill['temperature']} (alpha {distill['alpha']}), "
                                f"hidden-state MSE x{distill['hidden_mse']} with layer map {distill['layer_map']}" if distill else "none"),
        f"- {', '.join(f'{m}: {row[m]:.2f}' for m in hub['metrics'])} on {row['dev_examples']} of "
        f"{record.data['dev'].available_examples if 'dev' in record.data else row['dev_examples']} {hub['dataset_name']} "
        f"{hub['dataset_split']} examples (a seeded subset when fewer)",
        *(["- base model: a vocabulary transplant of all-MiniLM-L6-v2 onto the bert-base-chinese vocabulary (zoo/transplant.py), "
           "not a pretrained Chinese model"] if cell.base_model == TRANSPLANT else []), "",
        "## Use", "",
        *([f"These repos are served at {endpoint}: `export HF_ENDPOINT={endpoint}` before running a snippet.", ""] if endpoint != HUB else []),
        *usage(cell, hub["pipeline_tag"], f"{org}/{name}"), "",
        *(sparse_usage(hub["pipeline_tag"], f"{org}/{name}") if record.size_on_disk else []),
        "## Reproduce", "", "Trained by", "", f"```bash\n{public_command(record.provenance.command)}\n```", "",
        f"(zoo git {str(record.provenance.git.sha)[:10]}, recipe `recipe.yaml` in this repo), "
        f"and re-scored from the Hub by `zoo reproduce --org {org} --family {get_adapter(record.task).family}`.", "",
        "## Limits", "",
        f"Profile `{cell.matrix_profile}`: trained on {record.train.examples} training examples for {record.train.steps} steps "
        f"and scored on {row['dev_examples']} dev examples, as the table says; numbers from other profiles are not comparable.", "",
        "## The matrix", "", table_md,
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines) + "\n")


def dense_row(cell: CellLabels) -> str:
    """The name of the matrix's dense row of this cell's model and task (the teacher, re-scored; zoo/matrix.py cell_name)."""
    prefix = cell.name[: cell.name.rindex(f"-s{round(cell.sparsity * 100)}-l{cell.layers}")]
    return f"{prefix}-s0-l{cell.base_layers}"


ZOO_LOADER = ("zoo's loader (`zoo.width.from_pretrained`, from the source of the zoo model zoo these repos were published from; "
              "the PyPI package named `zoo` is an unrelated project)")


# SQuAD: the post-processing the card's scores came from (tasks/squad.py best_answers), for one question:
# 384-token windows with 128 of overlap, the best start+end logit sum over the 20 top starts and ends
# of each window, inside the context and at most 30 tokens long (zoo also cuts questions at 64 tokens).
QA_ANSWER = [
    "", "def answer(question, context):",
    '    enc = tokenizer(question.lstrip(), context, truncation="only_second", max_length=384, stride=128,',
    "                    return_overflowing_tokens=True, return_offsets_mapping=True)",
    "    best, span = -np.inf, (0, 0)",
    '    for i, ids in enumerate(enc["input_ids"]):',
    '        starts, ends = logits(ids, enc["token_type_ids"][i])',
    "        inside = [sid == 1 for sid in enc.sequence_ids(i)]",
    "        for s in np.argsort(starts)[::-1][:20]:",
    "            for e in np.argsort(ends)[::-1][:20]:",
    "                if inside[s] and inside[e] and s <= e < s + 30 and starts[s] + ends[e] > best:",
    '                    best, span = starts[s] + ends[e], (enc["offset_mapping"][i][s][0], enc["offset_mapping"][i][e][1])',
    "    return context[span[0]:span[1]]", "",
    'print(answer("What is the capital of France?", "Paris is the capital of France."))',
]
QA_LOGITS = {
    "onnx": ["def logits(ids, types):",
             '    feed = {"input_ids": np.array([ids]), "attention_mask": np.ones((1, len(ids)), dtype=np.int64), "token_type_ids": np.array([types])}',
             "    start, end = session.run(None, feed)[:2]", "    return start[0], end[0]"],
    "transformers": ["def logits(ids, types):", "    with torch.no_grad():",
                     "        out = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types]))",
                     "    return out.start_logits[0].numpy(), out.end_logits[0].numpy()"],
}


def task_lines(pipeline_tag: str, runtime: str) -> list[str]:
    """After loading: for question answering, the answer with the scored post-processing; else one forward."""
    if pipeline_tag == "question-answering":
        return ["", *QA_LOGITS[runtime], *QA_ANSWER]
    if runtime == "onnx":
        return ['outputs = session.run(None, {k: v.astype("int64") for k, v in tokenizer("Hello world", return_tensors="np").items()})']
    return ['outputs = model(**tokenizer("Hello world", return_tensors="pt"))']


def onnx_usage(repo: str, file: str, what: str, pipeline_tag: str) -> list[str]:
    return [f"{what}; run it with ONNX Runtime:", "", "```python", "import numpy as np", "import onnxruntime as ort",
            "from huggingface_hub import snapshot_download", "from transformers import AutoTokenizer", "",
            f'path = snapshot_download("{repo}", allow_patterns=["*.json", "{file}"])', "tokenizer = AutoTokenizer.from_pretrained(path)",
            f'session = ort.InferenceSession(f"{{path}}/{file}")', *task_lines(pipeline_tag, "onnx"), "```"]


def usage(cell: CellLabels, pipeline_tag: str, repo: str) -> list[str]:
    """A snippet that loads what the card's scores were measured on (the int8 ONNX file for a
    quantised cell, the fp32 ONNX export for a width-pruned one, else stock transformers) and,
    for question answering, answers with the post-processing the scores came from."""
    if cell.quant != "none":
        return onnx_usage(repo, "model.int8.onnx", "The scores are the int8 model's, scored in batches: dynamic int8 quantises "
                          "activations per batch, so one input alone can differ slightly (an answer on a near-tie)", pipeline_tag)
    if cell.width < 1:
        return [*onnx_usage(repo, "model.onnx", "`model.onnx` is these weights exported to ONNX (the scores were measured in PyTorch; "
                                                "`zoo reproduce` checks the export against the weights)", pipeline_tag), "",
                f"Fewer attention heads at this hidden size is not a stock BERT config: stock `from_pretrained` refuses these weights "
                f"(size mismatch; with `ignore_mismatched_sizes=True` it would re-initialise them). In PyTorch, load them with {ZOO_LOADER}, "
                f"which builds the sliced shapes and loads the safetensors strictly: `from_pretrained({AUTO_CLASS[pipeline_tag]}, path)`."]
    return ["```python", "import numpy as np", "import torch", "from huggingface_hub import snapshot_download",
            f"from transformers import {AUTO_CLASS[pipeline_tag]}, AutoTokenizer", "",
            f'path = snapshot_download("{repo}")', "tokenizer = AutoTokenizer.from_pretrained(path)",
            f"model = {AUTO_CLASS[pipeline_tag]}.from_pretrained(path).eval()", *task_lines(pipeline_tag, "transformers"), "```"]


def sparse_usage(pipeline_tag: str, repo: str) -> list[str]:
    """How to download and load only a compressed file (zoo's bitmask format, zoo/sparse_storage.py)."""
    fp16 = sparse_storage.FORMS["fp16"][0]
    return [f"To download a smaller file instead of `model.safetensors`, take `{fp16}` (or the lossless `{sparse_storage.FORMS['fp32'][0]}`) "
            f"and load it with {ZOO_LOADER}, which rebuilds the dense weights:", "", "```python",
            "from huggingface_hub import snapshot_download", f"from transformers import {AUTO_CLASS[pipeline_tag]}",
            "from zoo.width import from_pretrained", "",
            f'path = snapshot_download("{repo}", allow_patterns=["*.json", "{fp16}"])',
            f"model = from_pretrained({AUTO_CLASS[pipeline_tag]}, path)", "```", ""]


def linked_table(df: pd.DataFrame, org: str, endpoint: str) -> str:
    """The sibling table, each cell linked at `endpoint`; a number a cell has not measured is blank, never 'nan'."""
    linked = df.assign(cell=[f"[{c}]({endpoint}/{org}/{c})" for c in df.cell]).drop(columns=["wall_time_s"])
    return linked.astype(object).where(linked.notna(), "").to_markdown(index=False)
