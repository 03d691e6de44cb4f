"""The config IDs of the emitted bundles that code outside the configs names (as
``monai.bundle.properties`` names the model-zoo IDs).

The emitter (:mod:`samdsk_plan.bundle.configs`) writes every ID below into the configs, and the
loop (:mod:`samdsk_plan.loop.rounds`) overrides them on the ``monai.bundle run`` command line
(``--ckpt_dir RUN/round_1/models``); a name kept here once cannot drift between the two.
``tests/test_bundle_ids.py`` checks that each ID the loop passes exists in the configs it runs.
"""

from __future__ import annotations

# paths (model-zoo names)
BUNDLE_ROOT = "bundle_root"
DATASET_DIR = "dataset_dir"
CKPT_DIR = "ckpt_dir"
OUTPUT_DIR = "output_dir"
DEVICE = "device"
DIST_BACKEND = "dist_backend"  # multi_gpu_train.json: "nccl" (GPUs) or "gloo" (CPU processes)
# the case list: a dataset folder, a MONAI datalist or a ``samdsk-plan split`` file, and which part of it
DATALIST = "datalist"
DATA_PART = "data_part"
VAL_FRACTION = "val_fraction"
SPLIT_SEED = "split_seed"
# training
EPOCHS = "epochs"
ITERATIONS_PER_EPOCH = "iterations_per_epoch"
BATCH_SIZE = "batch_size"
VAL_INTERVAL = "val_interval"
LEARNING_RATE = "learning_rate"
SEED = "seed"  # training's random seed (monai.utils.set_determinism): weights, sampling, augmentation
INIT_CHECKPOINT = "init_checkpoint"
# inference
SAVE_PROBABILITIES = "save_probabilities"
# proposals and pseudo-labelling
PLANS = "plans"
GENERATOR = "generator"
CHECKPOINT = "checkpoint"
MODEL_TYPE = "model_type"
ACCEPTANCE_THRESHOLD = "acceptance_threshold"

# the IDs the loop overrides, per config it runs (first file of the list)
_TRAINING = (
    DATASET_DIR,
    DATALIST,
    CKPT_DIR,
    EPOCHS,
    ITERATIONS_PER_EPOCH,
    BATCH_SIZE,
    VAL_INTERVAL,
    INIT_CHECKPOINT,
    DEVICE,
)
LOOP_OVERRIDES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("train.json",): _TRAINING,
    ("train.json", "multi_gpu_train.json"): (*_TRAINING, DIST_BACKEND),
    ("train.json", "evaluate.json"): (DATASET_DIR, DATALIST, CKPT_DIR, OUTPUT_DIR, DATA_PART, DEVICE),
    ("inference.json",): (DATASET_DIR, DATALIST, CKPT_DIR, OUTPUT_DIR, DATA_PART, SAVE_PROBABILITIES, DEVICE),
}
