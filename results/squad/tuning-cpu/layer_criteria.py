"""Scores every 3-of-6 keep-list of the SQuAD cpu teacher two ways on calibration features (see layer-criteria.json).

    ZOO_DATA_DIR=../shared/data python results/squad/tuning-cpu/layer_criteria.py 128
"""
import itertools, json, torch
from rich.progress import Progress
from zoo import pipeline
from zoo.layers import encoder_layers, MODEL_INPUTS
from zoo.distill import soft_logit_loss
torch.manual_seed(0)
run = pipeline.open_run("squad", "runs/squad/dense-cpu", "cpu")
rec = {"data": {}}
ex = pipeline._load(run, "train", 4000, 42, rec)
with Progress(disable=True) as p:
    feats = run.adapter.train_features(ex, pipeline.bar(p, "t", len(ex)))
batches = pipeline.calibration_batches(feats, 32, 42, run.pad_id)(int(__import__('sys').argv[1]))
model = run.adapter.build_model(run.model_path).eval()
layers = encoder_layers(model)
inputs = [{k: v for k, v in b.items() if k in MODEL_INPUTS} for b in batches]
with torch.no_grad():
    ref = [model(**b, output_hidden_states=True) for b in inputs]
def run_keep(keep):
    model.base_model.encoder.layer = torch.nn.ModuleList(layers[i] for i in keep)
    with torch.no_grad():
        outs = [model(**b, output_hidden_states=True) for b in inputs]
    model.base_model.encoder.layer = layers
    return outs
res = {}
for keep in itertools.combinations(range(6), 3):
    outs = run_keep(keep)
    masks = [b["attention_mask"].bool() for b in inputs]
    S = torch.cat([o.hidden_states[-1][m] for o, m in zip(outs, masks)])
    T = torch.cat([r.hidden_states[-1][m] for r, m in zip(ref, masks)])
    kl = sum(float(soft_logit_loss(o[n], r[n], 1.0)) for o, r in zip(outs, ref) for n in ("start_logits", "end_logits")) / (2 * len(outs))
    rel = float(((S - T) ** 2).sum() / (T - T.mean(0)) .pow(2).sum())
    X = torch.cat([S, torch.ones(len(S), 1)], 1)
    A = torch.linalg.solve(X.T @ X + 1e-2 * len(X) * torch.eye(X.shape[1]), X.T @ T)
    fit = X @ A
    rel_lin = float(((fit - T) ** 2).sum() / (T - T.mean(0)).pow(2).sum())
    res[str(list(keep))] = dict(kl=round(kl, 3), rel=round(rel, 3), rel_lin=round(rel_lin, 3))
for k in ("kl", "rel", "rel_lin"):
    print(k, [ (kk, v[k]) for kk, v in sorted(res.items(), key=lambda kv: kv[1][k])][:8])
json.dump(res, open("runs/exp/criteria.json", "w"), indent=1)  # layer-criteria.json keeps kl and rel_lin
for kk in ("[0, 2, 4]", "[0, 4, 5]", "[0, 1, 2]", "[0, 2, 5]", "[1, 3, 5]"): print(kk, res[kk])
