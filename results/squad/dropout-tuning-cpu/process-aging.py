"""Does a process that has trained cells train the next ones slower? Three `zoo matrix` calls in one
Python process: 60 steps of the 3-layer KD cell, the 80% KD cell (200 steps), the 3-layer KD cell again.
Run from the checkout root: ZOO_DATA_DIR=../shared/data python results/squad/dropout-tuning-cpu/process-aging.py"""
import glob
import json
import shutil

from zoo import cli

runs = [("minilm-l6-squad-s0-l3-kd", "60"), ("minilm-l6-squad-s80-l6-kd", "200"), ("minilm-l6-squad-s0-l3-kd", "60")]
for i, (cell, steps) in enumerate(runs):
    root = f"/tmp/process-aging/{i}"
    shutil.rmtree(root, ignore_errors=True)
    try:
        cli.main(["matrix", "squad", "--matrix", "results/squad/dropout-tuning-cpu/matrix.yaml", "--profile", "no-dropout",
                  "--cells", cell, "--root", root, "--max-steps", steps, "--eval-examples", "20"])
    except SystemExit:
        pass
    for f in glob.glob(f"{root}/*/metrics.json"):
        x = json.load(open(f))
        print("run", i, cell, steps, "steps:", x["train"]["features_per_second"], "features/s,", x["timings_s"]["train"], "s", flush=True)
