"""A relaxation: the architecture parameters of a space network and the decisions of each step.

``Relaxation(model, device)`` walks a network written with choice modules
(``nasforge.nn``), creates one architecture tensor ``alpha [rows, candidates]`` per label
(a label used in several places is one tensor) and attaches itself to every choice module.
A one-shot method then sets, before each forward pass, one decision per label:

- ``soft()``: softmax weights (DARTS): every candidate runs, outputs mixed;
- ``hard(tau)``: a Gumbel-max sample per row with straight-through weights (GDAS): only the
  sampled candidate runs;
- ``paths(...)``: binarized paths (ProxylessNAS): one sampled candidate per row, or two with
  binary gates in an architecture step;
- ``argmax_paths()``: the derived network inside the supernet.

Labels are in the order of their first appearance in the network. The initial values are
``std * N(0, 1)`` drawn on the CPU in one flat vector over all labels in that order (the same
values on every device), so a space whose labels form equal-sized groups (the DARTS normal and
reduction cells) starts exactly as with one matrix per group.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.errors import ConfigError, TrainingError
from nasforge.nn.choices import ChoiceModule, Decision, Hard, Paths, Soft, choice_modules, declarations

MAX_RESAMPLES = 100


def sample_gumbel(like: Tensor) -> Tensor:
    """Standard Gumbel noise shaped like ``like`` (``-log(e)``, ``e ~ Exp(1)``; global torch RNG)."""
    return -torch.empty_like(like).exponential_().log()


def gumbel_hard(alpha: Tensor, tau: float) -> Hard:
    """One candidate per row of ``alpha [rows, n]`` by Gumbel-max, straight-through weights.

    The weights equal the one-hot of the index exactly, and their gradient w.r.t. ``alpha``
    is that of ``softmax((log_softmax(alpha) + g) / tau)``. A sample with inf/NaN noise or
    probabilities is drawn again (as the official GDAS code does).
    """
    log_p = F.log_softmax(alpha, dim=-1)
    for _ in range(MAX_RESAMPLES):
        gumbels = sample_gumbel(log_p)
        probs = F.softmax((log_p + gumbels) / tau, dim=-1)
        if torch.isfinite(gumbels).all() and torch.isfinite(probs).all():
            break
    else:
        raise TrainingError(f"GDAS could not draw a finite sample in {MAX_RESAMPLES} tries: the architecture "
                            "parameters are NaN/inf; lower strategy.a_lr and resume from the last checkpoint")
    index = probs.detach().argmax(dim=-1)
    one_hot = torch.zeros_like(probs).scatter_(-1, index.unsqueeze(-1), 1.0)
    return Hard(index.tolist(), one_hot + (probs - probs.detach()))


class Relaxation:
    """Per-label architecture parameters of a space network, and the current decision per label."""

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", std: float = 1e-3):
        modules = choice_modules(model)
        if not modules:
            raise ConfigError("the space network has no choice modules (OpChoice, Choose, InputChoice, NodeChoice); "
                              "a one-shot method needs at least one")
        declarations(model)  # a label reused with other candidates fails here, naming it
        self.shapes: dict[str, tuple[int, int]] = {}
        self.modules: dict[str, list[ChoiceModule]] = {}
        self.groups: dict[str, str] = {}
        for _, module in modules:
            for label, shape in module.alpha_shapes().items():
                self.shapes.setdefault(label, shape)
                self.modules.setdefault(label, []).append(module)
                self.groups.setdefault(label, module.group)
        self.labels = list(self.shapes)
        self.names = {label: self.modules[label][0].candidate_names(label) for label in self.labels}
        sizes = [r * n for r, n in self.shapes.values()]
        flat = std * torch.randn(sum(sizes)) if std else torch.zeros(sum(sizes))  # std 0: no draw from the RNG
        self.alphas: dict[str, nn.Parameter] = {}
        for label, chunk in zip(self.labels, torch.split(flat, sizes)):
            self.alphas[label] = nn.Parameter(chunk.reshape(self.shapes[label]).clone().to(device))
        for _, module in modules:
            object.__setattr__(module, "_relaxation", self)
        self.current: dict[str, Decision] = {}

    # --- parameters -------------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        """The architecture tensors in label order (what the architecture optimiser updates)."""
        return [self.alphas[label] for label in self.labels]

    def probs(self) -> dict[str, np.ndarray]:
        """Row-wise softmax of every label's alpha, on the CPU."""
        return {label: F.softmax(a.detach().float(), dim=-1).cpu().numpy() for label, a in self.alphas.items()}

    def derive(self, probs: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Arch values of every label (each choice module's own rule: argmax, top-k inputs, DARTS node)."""
        probs = self.probs() if probs is None else probs
        out: dict[str, Any] = {}
        for label in self.labels:
            out.update(self.modules[label][0].derive(probs))
        return out

    def argmax(self) -> dict[str, list[int]]:
        """Per label and row the candidate with the largest alpha."""
        return {label: a.detach().argmax(dim=-1).tolist() for label, a in self.alphas.items()}

    def weights_record(self) -> dict[str, list[list[float]]]:
        """Softmax rows per record group (a cell type's rows concatenated in label order), for the store."""
        out: dict[str, list[list[float]]] = {}
        for label, rows in self.probs().items():
            out.setdefault(self.groups[label], []).extend(rows.tolist())
        return out

    def by_label(self) -> dict[str, dict[str, float]]:
        """Single-row labels: candidate name -> probability (``{label: {name: p}}``)."""
        return {label: dict(zip(self.names[label], rows[0].tolist()))
                for label, rows in self.probs().items() if len(rows) == 1}

    # --- decisions ----------------------------------------------------------------------
    def decision(self, label: str) -> Decision:
        try:
            return self.current[label]
        except KeyError:
            raise ConfigError(f"choice '{label}' has no decision for this step; the one-shot method must set "
                              "one for every label before a forward pass") from None

    def set(self, decisions: Mapping[str, Decision]) -> None:
        self.current = dict(decisions)

    def soft(self) -> None:
        """Softmax weights for every label (DARTS)."""
        self.set({label: Soft(F.softmax(a, dim=-1)) for label, a in self.alphas.items()})

    def hard(self, tau: float) -> None:
        """A Gumbel hard sample per row (GDAS). Labels with as many candidates are sampled together
        (one draw over their stacked rows, in label order)."""
        by_width: dict[int, list[str]] = {}
        for label in self.labels:
            by_width.setdefault(self.shapes[label][1], []).append(label)
        decisions: dict[str, Decision] = {}
        for group in by_width.values():
            stacked = torch.cat([self.alphas[label] for label in group], dim=0)
            sample = gumbel_hard(stacked, tau)
            start = 0
            for label in group:
                rows = self.shapes[label][0]
                decisions[label] = Hard(sample.index[start:start + rows], sample.weights[start:start + rows])
                start += rows
        self.set(decisions)

    def argmax_paths(self) -> None:
        """The candidate with the largest alpha per row (the derived network inside the supernet)."""
        self.set({label: Paths(rows) for label, rows in self.argmax().items()})

    def sample_paths(self) -> dict[str, list[int]]:
        """One candidate per row drawn from softmax(alpha) (ProxylessNAS's weight step); set and returned."""
        drawn = {label: [int(torch.multinomial(F.softmax(row.detach(), dim=-1), 1).item()) for row in a]
                 for label, a in self.alphas.items()}
        self.set({label: Paths(rows) for label, rows in drawn.items()})
        return drawn

    def __repr__(self) -> str:
        return f"Relaxation({len(self.labels)} labels, {sum(a.numel() for a in self.alphas.values())} parameters)"
