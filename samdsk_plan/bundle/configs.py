"""The emitted bundle's configs, built as plain dicts from a plan.

IDs follow MONAI's model-zoo conventions (``network_def``, ``train#trainer``,
``validate#evaluator``, ``dataset_dir``, ...) so ``ConfigWorkflow.check_properties`` and the
zoo tools recognise them. Paths derive from ``bundle_root``; the data root comes from
``--dataset_dir`` and the case list from ``--datalist`` (a dataset folder, a MONAI datalist or
a ``samdsk-plan split`` file). No string contains ``#`` (MONAI rewrites it to ``::``).
"""

from __future__ import annotations

from dataclasses import dataclass

from samdsk_plan.bundle import ids
from samdsk_plan.errors import SamdskError
from samdsk_plan.io.datalists import PART_TEST, PART_TRAIN, PART_UNLABELLED, PART_VAL
from samdsk_plan.planning.plans import ConfigurationPlan, Plans, TrainingPlan

IMPORTS = [
    "$import os",
    "$import numpy",
    "$import torch",
    "$import samdsk_plan.io.datalists as samdsk_datalists",
    "$import samdsk_plan.bundle.runtime.data as samdsk_data",
    "$import samdsk_plan.bundle.runtime.components as samdsk_components",
]
KEYS = ["image", "label"]
_COMPONENTS = "samdsk_plan.bundle.runtime.components"


@dataclass(frozen=True)
class Layout:
    """What a bundle trains and how it sees its data.

    ``cfg`` is the plan's configuration the network is built from. Three cases:

    * 3D images, ``3d_fullres``: 3D patches, 3D sliding window;
    * 2D images (``planar``), ``2d``: each file is one plane ``[x, y]``, read by
      :class:`~samdsk_plan.bundle.runtime.components.PlanarImageReader` as the rest of the package
      reads it, 2D patches, 2D sliding window, label maps written in the input's format (PNG in, PNG out);
    * 3D images, ``2d`` (``slicewise``, nnU-Net's 2D configuration of a 3D dataset): volumes are
      loaded and resampled as in 3D, training crops one slice across ``cfg.slice_axis`` and drops
      that axis, inference runs the 2D network slice by slice (MONAI ``SliceInferer``).
    """

    cfg: ConfigurationPlan
    planar: bool

    @property
    def slicewise(self) -> bool:
        return self.cfg.spatial_dims == 2 and not self.planar

    @property
    def dims(self) -> int:
        """Spatial dimensions of the network's input patches."""
        return self.cfg.spatial_dims


def layout(plans: Plans, configuration: str | None = None) -> Layout:
    """The :class:`Layout` of a bundle for ``plans`` trained with ``configuration`` (default:
    ``2d`` for 2D images, ``3d_fullres`` otherwise); SamdskError when the plan has none such or
    a 3D configuration is asked for 2D images."""
    planar = plans.dimensions == 2
    name = configuration or ("2d" if planar else "3d_fullres")
    if planar and name != "2d":
        raise SamdskError(f"{plans.source}: the images are 2D; only the 2d configuration can train on them")
    return Layout(plans.configuration(name), planar)


def _files(part: str) -> str:
    """The expression listing the entries of data ``part`` (a part name, or ``@data_part``)."""
    part = part if part.startswith("@") else f"'{part}'"
    return (
        f"$samdsk_datalists.datalist_files(@{ids.DATALIST}, {part}, @{ids.DATASET_DIR}, "
        f"@{ids.VAL_FRACTION}, @{ids.SPLIT_SEED})"
    )


def _paths(plans: Plans) -> dict:
    """Model-zoo path IDs and the case list, in the zoo's reading order."""
    return {
        ids.BUNDLE_ROOT: ".",
        ids.CKPT_DIR: f"$@{ids.BUNDLE_ROOT} + '/models'",
        ids.OUTPUT_DIR: f"$@{ids.BUNDLE_ROOT} + '/eval'",
        ids.DATASET_DIR: f"$@{ids.BUNDLE_ROOT} + '/data'",
        ids.DATALIST: f"@{ids.DATASET_DIR}",
        ids.VAL_FRACTION: plans.training.val_fraction,
        ids.SPLIT_SEED: 0,
    }


def normalization_transforms(plans: Plans, key: str = "image") -> list[dict]:
    """MONAI intensity transforms implementing the plan's per-channel normalisation."""
    schemes = plans.normalization
    out = []
    for n in schemes:
        channels = None if len(schemes) == 1 else [n["channel"]]
        if n["scheme"] == "ct":
            lo, hi = n["clip"]
            mean, std = n["mean"], n["std"]
            out.append(
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": key,
                    "a_min": lo,
                    "a_max": hi,
                    "b_min": round((lo - mean) / std, 6),
                    "b_max": round((hi - mean) / std, 6),
                    "clip": True,
                    **({"channel_wise": True} if channels else {}),
                }
            )
        elif n["scheme"] == "zscore":
            out.append({"_target_": "NormalizeIntensityd", "keys": key, "nonzero": n["nonzero"], "channel_wise": True})
        elif n["scheme"] == "rescale_to_0_1":
            out.append({"_target_": "ScaleIntensityd", "keys": key, "minv": 0.0, "maxv": 1.0, "channel_wise": True})
        elif n["scheme"] == "rgb_to_0_1":
            out.append(
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": key,
                    "a_min": 0.0,
                    "a_max": 255.0,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                }
            )
    return out


def _geometry(plans: Plans, lay: Layout, keys: list[str], resampled: list[str] | None = None) -> list[dict]:
    """Load ``keys`` (read errors name the file; a label must hold only the plan's values);
    reorient to RAS and resample to the plan's spacing those in ``resampled`` (default: all)."""
    resampled = keys if resampled is None else resampled
    modes = {"image": "bilinear", "label": "nearest"}
    if lay.planar:
        loaders = [
            {
                "_target_": f"{_COMPONENTS}.LoadImageNamedd",
                "keys": key,
                "reader": {"_target_": f"{_COMPONENTS}.PlanarImageReader", "label": key == "label"},
            }
            for key in keys
        ]
    else:
        loaders = [{"_target_": f"{_COMPONENTS}.LoadImageNamedd", "keys": keys}]
    checks = (
        [{"_target_": f"{_COMPONENTS}.CheckLabelValuesd", "keys": "label", "labels": "@class_names"}]
        if "label" in keys
        else []
    )
    return [
        *loaders,
        *checks,
        {"_target_": "EnsureChannelFirstd", "keys": keys},
        {"_target_": "Orientationd", "keys": resampled, "axcodes": "RA" if lay.planar else "RAS"},
        {
            "_target_": "Spacingd",
            "keys": resampled,
            "pixdim": lay.cfg.spacing if lay.planar else plans.target_spacing,
            "mode": [modes[k] for k in resampled],
        },
    ]


def _inferer(lay: Layout) -> dict:
    """Gaussian-weighted sliding window over patches (slice by slice for a slice-wise bundle)."""
    window = {"roi_size": "@patch_size", "sw_batch_size": "@sw_batch_size", "overlap": 0.5, "mode": "gaussian"}
    if lay.slicewise:
        return {"_target_": "SliceInferer", **window, "spatial_dim": lay.cfg.slice_axis}
    return {"_target_": "SlidingWindowInferer", **window}


def _patch_sampling(lay: Layout, fg: float) -> list[dict]:
    """Pad to the patch and crop one patch (``fg``: the foreground-centred share); a slice-wise
    bundle crops a one-slice patch and drops the slice axis."""
    size: list[int | str] | str = "@patch_size"
    if lay.slicewise:
        size = list(lay.cfg.patch_size)
        size.insert(lay.cfg.slice_axis, 1)
    crop = [
        {"_target_": "SpatialPadd", "keys": KEYS, "spatial_size": size},
        {
            "_target_": "RandCropByPosNegLabeld",
            "keys": KEYS,
            "label_key": "label",
            "spatial_size": size,
            "pos": 1,
            "neg": round((1 - fg) / fg, 3),
            "num_samples": 1,
        },
    ]
    if lay.slicewise:
        crop.append({"_target_": "SqueezeDimd", "keys": KEYS, "dim": lay.cfg.slice_axis + 1})
    return crop


def _augmentation(lay: Layout) -> list[dict]:
    """nnU-Net's augmentations in MONAI, over the network's spatial axes."""
    n = lay.dims
    sigmas = {f"sigma_{a}": [0.5, 1.0] for a in "xyz"[:n]}
    return [
        {
            "_target_": "RandAffined",
            "keys": KEYS,
            "prob": 0.2,
            "rotate_range": [0.52] * (1 if n == 2 else 3),
            "scale_range": [0.3] * n,
            "mode": ["bilinear", "nearest"],
            "padding_mode": "zeros",
        },
        {"_target_": "RandGaussianNoised", "keys": "image", "prob": 0.1, "std": 0.1},
        {"_target_": "RandGaussianSmoothd", "keys": "image", "prob": 0.2, **sigmas},
        {"_target_": "RandScaleIntensityd", "keys": "image", "prob": 0.15, "factors": 0.25},
        {"_target_": "RandAdjustContrastd", "keys": "image", "prob": 0.15, "gamma": [0.7, 1.5]},
        *({"_target_": "RandFlipd", "keys": KEYS, "prob": 0.5, "spatial_axis": a} for a in range(n)),
    ]


def _network_def(plans: Plans, cfg: ConfigurationPlan) -> dict:
    net = cfg.network
    return {
        "_target_": "DynUNet",
        "spatial_dims": cfg.spatial_dims,
        "in_channels": plans.n_channels,
        "out_channels": plans.n_classes,
        "kernel_size": net.kernel_size,
        "strides": net.strides,
        "upsample_kernel_size": net.upsample_kernel_size,
        "filters": net.filters,
        "norm_name": net.norm_name,
        "deep_supervision": net.deep_supervision,
        "deep_supr_num": net.deep_supr_num,
        "res_block": net.res_block,
    }


def _common(plans: Plans, lay: Layout, network: str = "$@network_def.to(@device)") -> dict:
    """What every config opens with, in the model zoo's reading order: imports, paths, device,
    data and network settings, the network, the inferer."""
    cfg = lay.cfg
    return {
        "imports": IMPORTS,
        **_paths(plans),
        ids.DEVICE: "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "amp": "$torch.cuda.is_available()",
        "num_workers": 2,
        "num_classes": plans.n_classes,
        "class_names": {str(v): n for v, n in plans.labels.items()},
        "patch_size": cfg.patch_size,
        "sw_batch_size": 4,
        "network_def": _network_def(plans, cfg),
        "network": network,
        "inferer": _inferer(lay),
    }


def _optimizer(training: TrainingPlan) -> dict:
    """``torch.optim.Adam`` or nnU-Net's ``SGD`` (Nesterov) as the plan's ``training`` says."""
    common = {"params": "$@network.parameters()", "lr": f"@{ids.LEARNING_RATE}", "weight_decay": training.weight_decay}
    if training.optimizer == "SGD":
        return {"_target_": "torch.optim.SGD", **common, "momentum": training.momentum, "nesterov": True}
    if training.optimizer == "Adam":
        return {"_target_": "torch.optim.Adam", **common}
    raise SamdskError(f"unsupported optimizer {training.optimizer!r} in the plan (use 'Adam' or 'SGD')")


def train_config(plans: Plans, configuration: str | None = None) -> dict:
    """``configs/train.json``: SupervisedTrainer on random patches, sliding-window validation
    (``configuration``: see :func:`layout`)."""
    lay = layout(plans, configuration)
    cfg, tr = lay.cfg, plans.training
    one_hot = {
        "_target_": "AsDiscreted",
        "keys": ["pred", "label"],
        "argmax": [True, False],
        "to_onehot": "@num_classes",
    }
    common = _common(plans, lay, f"$samdsk_components.initialised(@network_def.to(@device), @{ids.INIT_CHECKPOINT})")
    head = {k: common.pop(k) for k in ("imports", *_paths(plans), ids.DEVICE, "amp", "num_workers")}
    return {
        **head,
        ids.EPOCHS: tr.epochs,
        ids.ITERATIONS_PER_EPOCH: tr.iterations_per_epoch,
        ids.BATCH_SIZE: cfg.batch_size,
        ids.VAL_INTERVAL: 10,
        ids.LEARNING_RATE: tr.learning_rate,
        ids.SEED: 0,
        "cache_rate": 1.0,
        ids.INIT_CHECKPOINT: None,
        **common,
        "loss": {"_target_": "samdsk_plan.bundle.runtime.components.DeepSupervisionDiceCE"},
        "optimizer": _optimizer(tr),
        "lr_scheduler": {
            "_target_": "torch.optim.lr_scheduler.PolynomialLR",
            "optimizer": "@optimizer",
            "total_iters": f"@{ids.EPOCHS}",
            "power": 0.9,
        },
        "train": {
            "files": _files(PART_TRAIN),
            "deterministic_transforms": _geometry(plans, lay, KEYS)
            + normalization_transforms(plans)
            + [{"_target_": "EnsureTyped", "keys": KEYS}],
            "random_transforms": [
                *_patch_sampling(lay, tr.foreground_oversampling),
                *_augmentation(lay),
                {"_target_": "EnsureTyped", "keys": KEYS, "track_meta": False},
            ],
            "preprocessing": {
                "_target_": "Compose",
                "transforms": "$@train::deterministic_transforms + @train::random_transforms",
            },
            "dataset": {
                "_target_": "CacheDataset",
                "data": "$samdsk_data.without_weights(@train::files)",
                "transform": "@train::preprocessing",
                "cache_rate": "@cache_rate",
                "num_workers": "@num_workers",
            },
            "sampler": {
                "_target_": "torch.utils.data.WeightedRandomSampler",
                "weights": "$samdsk_data.sample_weights(@train::files)",
                "replacement": True,
                "num_samples": "$@iterations_per_epoch * @batch_size",
            },
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": "@train::dataset",
                "batch_size": "@batch_size",
                "sampler": "@train::sampler",
                "num_workers": "@num_workers",
            },
            "inferer": {"_target_": "SimpleInferer"},
            # logging last: the multi-GPU overlay keeps it on rank 0 only
            "handlers": [
                {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "print_lr": True},
                {
                    "_target_": "ValidationHandler",
                    "validator": "@validate::evaluator",
                    "epoch_level": True,
                    "interval": "@val_interval",
                },
                {
                    "_target_": "StatsHandler",
                    "tag_name": "train_loss",
                    "output_transform": "$monai.handlers.from_engine(['loss'], first=True)",
                },
            ],
            "trainer": {
                "_target_": "SupervisedTrainer",
                "device": "@device",
                "max_epochs": "@epochs",
                "train_data_loader": "@train::dataloader",
                "network": "@network",
                "optimizer": "@optimizer",
                "loss_function": "@loss",
                "inferer": "@train::inferer",
                "train_handlers": "@train::handlers",
                "amp": "@amp",
            },
        },
        "validate": {
            "files": _files(PART_VAL),
            "preprocessing": {"_target_": "Compose", "transforms": "%train::deterministic_transforms"},
            "dataset": {
                "_target_": "CacheDataset",
                "data": "@validate::files",
                "transform": "@validate::preprocessing",
                "cache_rate": "@cache_rate",
                "num_workers": "@num_workers",
            },
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": "@validate::dataset",
                "batch_size": 1,
                "shuffle": False,
                "num_workers": "@num_workers",
            },
            "postprocessing": {
                "_target_": "Compose",
                "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": True}, one_hot],
            },
            # saving and logging, both on rank 0 only under the multi-GPU overlay
            "handlers": [
                {
                    "_target_": "samdsk_plan.bundle.runtime.checkpoint.BestModelSaver",
                    "save_dir": "@ckpt_dir",
                    "network": "@network",
                    "filename": "model.pt",
                },
                {"_target_": "StatsHandler", "iteration_log": False},
            ],
            "inferer": "@inferer",
            "key_metric": {
                "val_mean_dice": {
                    "_target_": "MeanDice",
                    "include_background": False,
                    "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
                }
            },
            "evaluator": {
                "_target_": "SupervisedEvaluator",
                "device": "@device",
                "val_data_loader": "@validate::dataloader",
                "network": "@network",
                "inferer": "@validate::inferer",
                "postprocessing": "@validate::postprocessing",
                "key_val_metric": "@validate::key_metric",
                "val_handlers": "@validate::handlers",
                "amp": "@amp",
            },
        },
        "initialize": [f"$monai.utils.set_determinism(seed=@{ids.SEED})"],
        "run": ["$@train::trainer.run()"],
    }


def _infer_postprocessing(preprocessing_ref: str) -> dict:
    return {
        "_target_": "Invertd",
        "keys": "pred",
        "transform": preprocessing_ref,
        "orig_keys": "image",
        "nearest_interp": False,
        "to_tensor": True,
    }


def inference_config(plans: Plans, configuration: str | None = None) -> dict:
    """``configs/inference.json``: one segmentation (and optionally softmax probabilities) per
    input image, in the input's geometry: ``IMAGE_seg`` in the input's format
    (:func:`samdsk_plan.io.images.label_suffix`), ``IMAGE_prob.nii.gz`` channel-last float32."""
    lay = layout(plans, configuration)
    return {
        **_common(plans, lay),
        ids.DATA_PART: PART_UNLABELLED,
        "files": _files(f"@{ids.DATA_PART}"),
        ids.SAVE_PROBABILITIES: False,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": _geometry(plans, lay, ["image"])
            + normalization_transforms(plans)
            + [{"_target_": "EnsureTyped", "keys": "image"}],
        },
        "dataset": {"_target_": "Dataset", "data": "@files", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": "@num_workers",
        },
        "activation": {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        "invert": _infer_postprocessing("@preprocessing"),
        "probability_saver": {
            "_target_": "SaveImaged",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "prob",
            "output_dtype": "$numpy.float32",
            "resample": False,
            "separate_folder": False,
            "print_log": False,
        },
        "argmax": {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        "segmentation_saver": {
            "_target_": f"{_COMPONENTS}.SaveSegmentationd",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "seg",
            "output_dtype": "$numpy.uint8",
            "resample": False,
            "separate_folder": False,
            "print_log": False,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": "$[@activation, @invert] + ([@probability_saver] if "
            f"@{ids.SAVE_PROBABILITIES} else []) + [@argmax, @segmentation_saver]",
        },
        "handlers": [
            {
                "_target_": "samdsk_plan.bundle.runtime.handlers.NamedCheckpointLoader",
                "load_path": "$@ckpt_dir + '/model.pt'",
                "load_dict": {"model": "@network"},
                "map_location": "@device",
            },
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": "@amp",
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def evaluate_config(plans: Plans, configuration: str | None = None) -> dict:
    """``configs/evaluate.json`` (overrides train.json): predict labelled cases, invert to the
    input geometry and compare with the label as stored (never resampled): Dice and HD95 per
    class and case."""
    lay = layout(plans, configuration)
    return {
        ids.DATA_PART: PART_TEST,
        "validate::files": _files(f"@{ids.DATA_PART}"),
        "validate::preprocessing": {
            "_target_": "Compose",
            "transforms": _geometry(plans, lay, KEYS, ["image"])
            + normalization_transforms(plans)
            + [{"_target_": "EnsureTyped", "keys": KEYS}],
        },
        "validate::dataset": {
            "_target_": "Dataset",
            "data": "@validate::files",
            "transform": "@validate::preprocessing",
        },
        "validate::postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                _infer_postprocessing("@validate::preprocessing"),
                {
                    "_target_": "AsDiscreted",
                    "keys": ["pred", "label"],
                    "argmax": [True, False],
                    "to_onehot": "@num_classes",
                },
            ],
        },
        "validate::handlers": [
            {
                "_target_": "samdsk_plan.bundle.runtime.handlers.NamedCheckpointLoader",
                "load_path": "$@ckpt_dir + '/model.pt'",
                "load_dict": {"model": "@network"},
                "map_location": "@device",
            },
            {"_target_": "StatsHandler", "iteration_log": False},
            {
                "_target_": "samdsk_plan.bundle.runtime.handlers.SegmentationReport",
                "output_dir": "@output_dir",
                "class_names": "@class_names",
            },
        ],
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@validate::evaluator.run()"],
    }


def multi_gpu_train_config() -> dict:
    """``configs/multi_gpu_train.json``: torchrun overlay (one process per GPU, NCCL). The device
    comes from ``LOCAL_RANK``; the training logger and the validation's saving and logging run on
    rank 0 only (the engines take ``*::rank_handlers``). ``--device cpu --dist_backend gloo`` runs
    the same on CPU processes (DDP without ``device_ids``)."""
    return {
        ids.DEVICE: "$torch.device('cuda:' + os.environ['LOCAL_RANK'])",
        ids.DIST_BACKEND: "nccl",
        "network": {
            "_target_": "torch.nn.parallel.DistributedDataParallel",
            "module": "$samdsk_components.initialised(@network_def.to(@device), @init_checkpoint)",
            "device_ids": "$[@device] if torch.device(@device).type == 'cuda' else None",
        },
        "train::sampler": {
            "_target_": "DistributedWeightedRandomSampler",
            "dataset": "@train::dataset",
            "weights": "$samdsk_data.sample_weights(@train::files)",
            "num_samples_per_rank": "$@iterations_per_epoch * @batch_size",
        },
        "validate::sampler": {
            "_target_": "DistributedSampler",
            "dataset": "@validate::dataset",
            "even_divisible": False,
            "shuffle": False,
        },
        "validate::dataloader::sampler": "@validate::sampler",
        "train::rank_handlers": "$@train::handlers if torch.distributed.get_rank() == 0 else @train::handlers[:-1]",
        "train::trainer::train_handlers": "@train::rank_handlers",
        "validate::rank_handlers": "$@validate::handlers if torch.distributed.get_rank() == 0 else []",
        "validate::evaluator::val_handlers": "@validate::rank_handlers",
        "initialize": [
            "$import torch.distributed as dist",
            f"$dist.is_initialized() or dist.init_process_group(backend=@{ids.DIST_BACKEND})",
            "$torch.device(@device).type != 'cuda' or torch.cuda.set_device(@device)",
            f"$monai.utils.set_determinism(seed=@{ids.SEED})",
        ],
        "run": ["$@train::trainer.run()"],
        "finalize": ["$dist.is_initialized() and dist.destroy_process_group()"],
    }


# the plan, read and validated in the bundle's process; the proposal settings default to its values
_PLANS = f"$samdsk_plans.Plans.load(@{ids.BUNDLE_ROOT} + '/configs/plans.json')"
_PROPOSAL_SETTINGS = {
    ids.GENERATOR: f"$@{ids.PLANS}.samdsk.generator",
    ids.CHECKPOINT: f"$@{ids.PLANS}.samdsk.sam.checkpoint",
    ids.MODEL_TYPE: f"$@{ids.PLANS}.samdsk.sam.model_type",
    "fast": False,
}
_GENERATORS = (
    "$samdsk_proposals.make_generators(plans=@plans, kind=@generator, checkpoint=@checkpoint, "
    "model_type=@model_type, device=@proposal_device, fast=@fast, prompted=@prompted)"
)


def propose_config(plans: Plans) -> dict:
    """``configs/propose.json``: segmentation proposals for the unlabelled cases, cached per case
    in ``proposals/`` (the plan's generator unless ``--generator NAME``; ``--prob_dir`` holding
    the inference's ``IMAGE_prob.nii.gz`` prompts LiteMedSAM with the predicted regions, without
    it LiteMedSAM tiles the slices with boxes)."""
    return {
        "imports": [
            "$import torch",
            "$import samdsk_plan.io.datalists as samdsk_datalists",
            "$import samdsk_plan.planning.plans as samdsk_plans",
            "$import samdsk_plan.proposals.pipeline as samdsk_proposals",
        ],
        **_paths(plans),
        ids.DATA_PART: PART_UNLABELLED,
        "cache_dir": f"$@{ids.BUNDLE_ROOT} + '/proposals'",
        "roi_dir": None,
        "prob_dir": None,
        ids.PLANS: _PLANS,
        **_PROPOSAL_SETTINGS,
        "prompted": "$@prob_dir is not None",
        "proposal_device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "num_workers": 1,
        "files": _files(f"@{ids.DATA_PART}"),
        "generators": _GENERATORS,
        "run": [
            "$samdsk_proposals.propose_entries(entries=@files, plans=@plans, cache_dir=@cache_dir, "
            "generators=@generators, roi_dir=@roi_dir, workers=@num_workers, prob_dir=@prob_dir)"
        ],
    }


def pseudolabel_config() -> dict:
    """``configs/pseudolabel.json`` (overrides inference.json): one SamDSK pass. Predict the
    unlabelled cases with their probabilities, get proposals (cached in ``proposals/``), match
    each case and accept those with ``beta >= acceptance_threshold``; writes the candidate
    labels, a record per case and ``accepted.json`` (a datalist with provenance) into
    ``pseudolabels/``. The threshold is the plan's unless overridden (the ``loop`` command
    calibrates it instead)."""
    return {
        "imports": IMPORTS
        + [
            "$import samdsk_plan.loop.pseudolabel as samdsk_pseudolabel",
            "$import samdsk_plan.planning.plans as samdsk_plans",
            "$import samdsk_plan.proposals.pipeline as samdsk_proposals",
        ],
        ids.SAVE_PROBABILITIES: True,
        ids.OUTPUT_DIR: f"$@{ids.BUNDLE_ROOT} + '/pseudolabels/predictions'",
        "match_dir": f"$@{ids.BUNDLE_ROOT} + '/pseudolabels'",
        "proposal_dir": f"$@{ids.BUNDLE_ROOT} + '/proposals'",
        ids.PLANS: _PLANS,
        **_PROPOSAL_SETTINGS,
        "prompted": True,
        "proposal_device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        ids.ACCEPTANCE_THRESHOLD: f"$@{ids.PLANS}.samdsk.acceptance_threshold",
        "max_accepted": f"$@{ids.PLANS}.samdsk.max_accepted_per_round",
        "pseudo_label_weight": f"$@{ids.PLANS}.samdsk.pseudo_label_weight",
        "generators": _GENERATORS,
        "run": [
            "$@evaluator.run()",
            "$samdsk_pseudolabel.pseudolabel_pass(entries=@files, pred_dir=@output_dir, out_dir=@match_dir, "
            "plans=@plans, generators=@generators, cache_dir=@proposal_dir, threshold=@acceptance_threshold, "
            "max_accepted=@max_accepted, weight=@pseudo_label_weight)",
        ],
    }


LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""
