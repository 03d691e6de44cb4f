"""Dataset fingerprint: spacing, shape, intensity and class statistics, and ROI-count priors
(image-level domain knowledge: connected components per class, per volume and per slice for 3D
data, per image for 2D images, ``dimensions`` 2)."""

from samdsk_plan.fingerprint.components import component_sizes, slice_components, structuring_element
from samdsk_plan.fingerprint.dataset import (
    SCHEMA_VERSION,
    FingerprintError,
    comparable,
    compute_fingerprint,
    write_fingerprint,
)

__all__ = [
    "SCHEMA_VERSION",
    "FingerprintError",
    "comparable",
    "component_sizes",
    "compute_fingerprint",
    "slice_components",
    "structuring_element",
    "write_fingerprint",
]
