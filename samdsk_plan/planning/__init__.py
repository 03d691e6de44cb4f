"""Planning: nnU-Net-style plans (spacing, patch, topology, batch, normalisation) and SamDSK
settings (ROI-count bounds, slice axes, SAM settings) from a fingerprint JSON."""

from samdsk_plan.planning.planner import (
    SCHEMA_VERSION,
    apply_override,
    normalization,
    override_value,
    plan_configuration,
    plan_from_fingerprint,
    samdsk_settings,
    target_spacing,
)
from samdsk_plan.planning.plans import ConfigurationPlan, Plans, SamdskPlan
from samdsk_plan.planning.topology import Topology, estimate_memory_gb, initial_patch_size, plan_topology

__all__ = [
    "SCHEMA_VERSION",
    "ConfigurationPlan",
    "Plans",
    "SamdskPlan",
    "Topology",
    "apply_override",
    "estimate_memory_gb",
    "initial_patch_size",
    "normalization",
    "override_value",
    "plan_configuration",
    "plan_from_fingerprint",
    "plan_topology",
    "samdsk_settings",
    "target_spacing",
]
