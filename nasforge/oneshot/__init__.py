"""Plumbing shared by one-shot strategies: mixed ops and architecture-weight relaxations."""

from nasforge.oneshot.mixed import EdgeWeights, MixedOp

__all__ = ["EdgeWeights", "MixedOp"]
