"""Paired F1 difference of `zoo bench distill` variants vs a baseline on the same dev questions
(per-question SQuAD F1 from each variant's predictions.json, SE of the mean difference).
Run from the checkout root: python results/bench/distill-squad-cpu-paired.py runs/bench-distill/squad-cpu BASE VARIANT..."""
import json, math, os, sys
sys.path.insert(0, ".")
from tasks.squad_metric import f1
root, base, others = sys.argv[1], sys.argv[2], sys.argv[3:]
golds = {}
for art in json.load(open(os.path.join(os.environ["ZOO_DATA_DIR"], "squad", "dev-v1.1.json")))["data"]:
    for p in art["paragraphs"]:
        for q in p["qas"]:
            golds[q["id"]] = [a["text"] for a in q["answers"]]
def scores(v):
    pred = json.load(open(f"{root}/{v}/predictions.json"))
    return {i: 100 * max(f1(t, g) for g in golds[i]) for i, t in pred.items()}
b = scores(base)
for v in others:
    s = scores(v); ids = sorted(b); d = [s[i] - b[i] for i in ids]
    m = sum(d) / len(d); se = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))
    print(f"{v} vs {base}: {m:+.2f} F1 (paired SE {se:.2f}, n={len(d)})")
