"""Settling ties by running both frameworks (placeholder until the TF-side runner lands)."""

from __future__ import annotations


def settle_ties(proposal, checkpoint, graph, model, input_shape=None) -> None:
    if graph is None:
        proposal.tie_check = "not possible: the checkpoint has no graph TensorFlow could run"
        return
    proposal.tie_check = "not implemented yet"
