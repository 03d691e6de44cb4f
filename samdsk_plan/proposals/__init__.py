"""Proposals: candidate regions per 2D slice from Segment Anything or a classical generator,
volumes cut into slices, and a per-case cache of the results."""

from samdsk_plan.proposals.base import ProposalGenerator, Proposals

__all__ = ["ProposalGenerator", "Proposals"]
