"""Bundle runs started fresh (``python -m monai.bundle run``) against runs forked from the
warm-start server (:mod:`samdsk_plan.loop.warm_start`), side by side in one process.

The work is a short training of the committed hippocampus bundle (slim network, a few labelled
cases of the committed split, ``--iterations`` batches of 2, validation once), the size of a
test-suite run, where MONAI's import is most of the time. Each start is timed ``--repeats`` times,
alternating, at one thread, and the weights of the last run of each are compared bit for bit.

    .venv/bin/python benchmarks/warm_start.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from samdsk_plan.loop.bundle_runner import BundleRunner, bundle_command

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "hippocampus"
SPLIT = REPO / "benchmarks" / "splits" / "hippocampus.json"
DATA = REPO.parent / "shared" / "data" / "hippocampus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    split = json.loads(SPLIT.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lists = work / "datalist.json"
        lists.write_text(json.dumps({"training": split["training"][:4], "testing": split["testing"][:1]}))
        train = {
            "dataset_dir": args.data.resolve(),
            "datalist": lists,
            "epochs": 1,
            "iterations_per_epoch": args.iterations,
            "batch_size": 2,
            "val_interval": 1,
            "num_workers": 0,
            "network_def#filters": "[8,16,32,64]",
        }
        warm = BundleRunner(BUNDLE, args.data, threads=1)
        times: dict[str, list[float]] = {"fresh": [], "warm": []}
        for i in range(args.repeats):
            start = time.perf_counter()
            cmd = bundle_command(["train.json"], {"device": "cpu", **train, "ckpt_dir": work / "fresh"})
            with open(work / f"fresh_{i}.log", "w") as log:
                subprocess.run(cmd, cwd=BUNDLE, stdout=log, stderr=subprocess.STDOUT, check=True)
            times["fresh"].append(time.perf_counter() - start)
            start = time.perf_counter()
            warm.run(["train.json"], work / f"warm_{i}.log", **{**train, "ckpt_dir": work / "warm"})
            times["warm"].append(time.perf_counter() - start)
            print(f"run {i + 1}/{args.repeats}: fresh {times['fresh'][-1]:.1f} s, warm {times['warm'][-1]:.1f} s")
        warm.close()
        a, b = (torch.load(work / d / "model.pt", map_location="cpu") for d in ("fresh", "warm"))
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print(f"\n{'start':<8}{'median s':>10}{'min s':>8}{'max s':>8}")
    for name, t in times.items():
        print(f"{name:<8}{statistics.median(t):>10.1f}{min(t):>8.1f}{max(t):>8.1f}")
    print("the first warm run includes the server's own import of MONAI")
    print(f"weights of the last fresh and warm trainings bit-identical: {same}")


if __name__ == "__main__":
    main()
