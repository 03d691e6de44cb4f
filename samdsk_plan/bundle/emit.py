"""Write a MONAI bundle folder from a plan."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from samdsk_plan.bundle.configs import (
    LOGGING_CONF,
    evaluate_config,
    inference_config,
    layout,
    multi_gpu_train_config,
    propose_config,
    pseudolabel_config,
    train_config,
)
from samdsk_plan.bundle.metadata import metadata, readme
from samdsk_plan.io.atomic import dumps_json
from samdsk_plan.planning.plans import Plans

LICENSE_TEXT = """Copyright samdsk-plan developers

Licensed under the Apache License, Version 2.0 (the "License"); you may not use the files of this
bundle except in compliance with the License. You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the License
is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or
implied. See the License for the specific language governing permissions and limitations under
the License. The data a model is trained on keep their own licence.
"""


def bundle_files(plans: Plans, name: str, configuration: str | None = None) -> dict[str, str]:
    """Relative path -> text of every file of the bundle (weights excepted) training the plan's
    ``configuration`` (see :func:`samdsk_plan.bundle.configs.layout`). Configs keep the
    model zoo's reading order (imports, paths, network, transforms, dataset, engine, handlers);
    data files (plans, metadata) are written with sorted keys. The same plan gives the same bytes."""
    lay = layout(plans, configuration)
    name_cfg = lay.cfg.name

    def config(obj: dict) -> str:
        return dumps_json(obj, sort_keys=False)

    return {
        "LICENSE": LICENSE_TEXT,
        "configs/metadata.json": dumps_json(metadata(plans, lay)),
        "configs/plans.json": dumps_json(plans.to_json()),
        "configs/train.json": config(train_config(plans, name_cfg)),
        "configs/inference.json": config(inference_config(plans, name_cfg)),
        "configs/evaluate.json": config(evaluate_config(plans, name_cfg)),
        "configs/multi_gpu_train.json": config(multi_gpu_train_config()),
        "configs/propose.json": config(propose_config(plans)),
        "configs/pseudolabel.json": config(pseudolabel_config()),
        "configs/logging.conf": LOGGING_CONF,
        "docs/README.md": readme(plans, name, lay),
        "models/.gitkeep": "",
    }


def emit_bundle(plans: Plans, output: str | Path, configuration: str | None = None) -> Path:
    """Write the bundle for ``plans`` (training its ``configuration``) into ``output`` (created if needed).

    Files are first written to a temporary folder beside ``output`` and then moved into place
    one by one, so a failure leaves no half-written file. Existing files of the bundle are
    replaced; anything else in ``output`` (trained weights in ``models/``, evaluation output)
    is left alone.
    """
    output = Path(output)
    files = bundle_files(plans, output.name, configuration)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        for rel, text in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_text(text, encoding="utf-8")
        for rel in files:
            (output / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).replace(output / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output
