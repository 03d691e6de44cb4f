"""One SamDSK round's pool work in one process and split over two (``loop --shard I/N``): wall
time and identical outputs.

Round 0 trains once on PSFHS (the split ``benchmarks/splits/psfhs_1pct.json``: 13 labelled
images, the slim 2D network, 300 iterations of batch 2; the bundle fingerprinted, planned and
emitted into ``--out``) with the first ``--pool`` images of its pool; the run folder is
copied twice and round 1 runs in each copy: once as ``--shard 0/1``, once as ``--shard 0/2``
and ``--shard 1/2`` side by side (two processes of one torch thread on this machine's two
cores). The threshold is fixed at 1.0, so the round accepts nothing and
stops before retraining: what is timed is prediction, proposals and matching of the pool
(the state's ``1/predict`` and ``1/match`` seconds; the coordinator's match step includes its
wait for the other shard). Printed: both wall times and whether every pool case's record
(beta, chosen proposals) and pseudo-label are the same.

    .venv/bin/python benchmarks/shards.py --out /tmp/samdsk-shards [--pool 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from samdsk_plan.errors import SamdskError
from samdsk_plan.io import read_image
from samdsk_plan.io.outputs import check_output

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "psfhs"
SPLIT = REPO / "benchmarks" / "splits" / "psfhs_1pct.json"
SLIM = "[8,16,32,64,64,64,64]"


def loop_args(bundle: Path, data: Path, datalist: Path, run: Path, rounds: int) -> list[str]:
    return [
        *(sys.executable, "-m", "samdsk_plan", "loop", str(bundle), "--data", str(data)),
        *("--datalist", str(datalist), "-o", str(run), "--rounds", str(rounds)),
        *("--threshold", "1.0", "--generator", "classical", "--epochs", "6", "--iterations-per-epoch", "50"),
        *("--batch-size", "2", "--val-interval", "2", "--set", f"network_def#filters={SLIM}"),
        *("--set", "num_workers=0", "--threads", "1", "-q", "--shard-poll", "1"),
    ]


def pool_seconds(run: Path) -> float:
    seconds = json.loads((run / "state.json").read_text())["seconds"]
    return seconds["1/predict"] + seconds["1/match"]


def records(run: Path) -> dict[str, tuple[float, dict, np.ndarray]]:
    out = {}
    for path in sorted((run / "round_1" / "matches" / "pool").glob("*.json")):
        rec = json.loads(path.read_text())
        out[path.stem] = (rec["beta"], rec["chosen"], np.asarray(read_image(rec["label"]).array))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, required=True, help="work folder (emptied first)")
    parser.add_argument("--pool", type=int, default=16, help="pool images")
    args = parser.parse_args()
    try:  # the folder is emptied: never the dataset or a folder inside it
        check_output(args.out, folder=True, protected=[args.data], what="work folder (--out)")
    except SamdskError as error:
        sys.exit(str(error))
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from supervised import prepare_bundle

    bundle = prepare_bundle("psfhs", args.data, args.out)
    split = json.loads(SPLIT.read_text())
    datalist = args.out / "list.json"
    datalist.write_text(json.dumps({**split, "unlabelled": split["unlabelled"][: args.pool]}))
    start = time.perf_counter()
    subprocess.run(loop_args(bundle, args.data, datalist, args.out / "base", 0), check=True)
    print(f"round 0 trained in {time.perf_counter() - start:.0f} s; pool of {args.pool} cases")
    for name in ("one", "two"):
        shutil.copytree(args.out / "base", args.out / name)
    one = args.out / "one"
    subprocess.run([*loop_args(bundle, args.data, datalist, one, 1), "--shard", "0/1"], check=True)
    two = args.out / "two"
    worker = subprocess.Popen([*loop_args(bundle, args.data, datalist, two, 1), "--shard", "1/2"])
    subprocess.run([*loop_args(bundle, args.data, datalist, two, 1), "--shard", "0/2"], check=True)
    if worker.wait() != 0:
        raise SystemExit("shard 1/2 failed")
    a, b = records(one), records(two)
    same = a.keys() == b.keys() and all(
        a[c][0] == b[c][0] and a[c][1] == b[c][1] and np.array_equal(a[c][2], b[c][2]) for c in a
    )
    t1, t2 = pool_seconds(one), pool_seconds(two)
    print(f"{'shards':>8} {'pool s':>8} {'speed-up':>9}")
    print(f"{1:>8} {t1:>8.1f} {1.0:>9.2f}")
    print(f"{2:>8} {t2:>8.1f} {t1 / t2:>9.2f}")
    print(f"records and pseudo-labels of all {len(a)} pool cases identical: {same}")


if __name__ == "__main__":
    main()
