"""Data IO: dataset layouts -> :class:`Case` records, image reading and writing, atomic files.

Everything downstream sees a dataset only through :class:`Dataset` and :func:`read_image`.
"""

from samdsk_plan.io.atomic import atomic_write_json, atomic_write_text
from samdsk_plan.io.cases import Case, Dataset, Problem
from samdsk_plan.io.images import ImageData, read_image, write_image
from samdsk_plan.io.layouts import load_dataset, read_json_object
from samdsk_plan.io.verify import CaseArrays, VerifyReport, read_case_checked, verify_dataset

__all__ = [
    "Case",
    "CaseArrays",
    "Dataset",
    "ImageData",
    "Problem",
    "VerifyReport",
    "atomic_write_json",
    "atomic_write_text",
    "load_dataset",
    "read_case_checked",
    "read_image",
    "read_json_object",
    "verify_dataset",
    "write_image",
]
