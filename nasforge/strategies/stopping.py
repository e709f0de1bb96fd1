"""DARTS+ early stopping (Liang et al. 2019): stop a cell search before it collapses.

Run long, DARTS drifts to parameter-free ops, skip-connects above all, and the derived
cell degrades ("collapse"). DARTS+ stops the search at the first epoch where either
  1. the derived normal cell has ``max_skips`` (2) or more skip-connects, or
  2. the ranking of the *learnable* ops' architecture weights (every op but the zero op,
     skip-connects and pooling) has not changed for ``patience`` (10) epochs,
and returns the genotype of that epoch. The stopper is a policy, not a strategy: any
search that records per-epoch weights and derived archs can use it (DARTS and GDAS do,
``strategy.early_stop=dartsplus``), on any space written with choice modules.

What is counted follows the space's own op names (``dartsplus_stopper``): the ranking
reads each record group's candidate names (darts: ``none``, pools and ``skip_connect`` are
parameter-free; nb201: ``none``, ``skip_connect``, ``avg_pool_3x3``), and criterion 1
counts ``skip_connect`` among the derived values of the normal cell (the labels whose
record group is ``normal``: the darts normal cell's nodes, NAS-Bench-201's six edges; a
space without a ``normal`` group counts every label).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from nasforge.nn.choices import is_zero
from nasforge.spaces.darts import PRIMITIVES

PARAMETER_FREE = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3")
#: the op names criterion 1 counts
SKIP_NAMES = ("skip_connect",)

#: op names of every row (one sequence), or per record group: one sequence for all its rows or one per row
OpNames = Sequence[str] | Mapping[str, Sequence[str] | Sequence[Sequence[str]]]


def is_parameter_free(name: str) -> bool:
    """An op without weights by its name: the zero op, an identity/skip, a pooling."""
    return name in PARAMETER_FREE or is_zero(name) or name.startswith("skip") or name == "identity" or "pool" in name


def _row_names(op_names: OpNames, group: str, rows: int) -> list[Sequence[str]]:
    if isinstance(op_names, Mapping):
        names = op_names[group]
        if names and not isinstance(names[0], str):
            if len(names) != rows:
                raise ValueError(f"record group {group!r} has {rows} rows, names for {len(names)}")
            return list(names)
        return [names] * rows
    return [op_names] * rows


def learnable_ranking(arch_weights: dict[str, Sequence[Sequence[float]]], primitives: OpNames = PRIMITIVES) -> tuple:
    """Per record group (a cell type) and row (an edge), the learnable ops ordered from strongest to weakest.

    ``primitives``: the candidate names of every row (darts by default), or per group (``{group: names}``
    or ``{group: [names of row 0, names of row 1, ...]}``)."""
    out = []
    for cell in sorted(arch_weights):
        rows = arch_weights[cell]
        for row, names in zip(rows, _row_names(primitives, cell, len(rows))):
            row = np.asarray(row, dtype=np.float64)
            learnable = [k for k, p in enumerate(names) if not is_parameter_free(p)]
            out.append(tuple(sorted(learnable, key=lambda k: (-row[k], k))))
    return tuple(out)


@dataclass
class DartsPlusStopper:
    """Decides, from the per-epoch records of a search, whether DARTS+ would stop now.

    ``op_names``: candidate names per record group (None: the darts ops); ``cell_labels``: the arch
    labels whose values are the counted cell's ops (None: the darts normal cell's ``normal.*.op*``)."""

    max_skips: int = 2
    patience: int = 10
    op_names: OpNames | None = None
    cell_labels: Sequence[str] | None = None
    #: turns a record's ``arch_weights`` into ``{group: rows}`` when a method records them otherwise
    convert: Any = None

    def skips(self, arch: dict[str, Any]) -> int:
        """Skip-connects of the counted cell in an arch record (``Arch.to_dict`` form)."""
        choices = arch["choices"]
        if self.cell_labels is None:
            ops = _normal_cell_ops(arch)
        else:
            ops = [choices[label] for label in self.cell_labels if label in choices]
        return sum(1 for op in ops if isinstance(op, str) and op in SKIP_NAMES)

    def check(self, history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        """None to go on, or ``{"criterion", "epoch", "detail"}`` for the last record of ``history``."""
        if not history:
            return None
        last = history[-1]
        skips = self.skips(last["arch"])
        if skips >= self.max_skips:
            return {"criterion": "skip_connect", "epoch": last["epoch"],
                    "detail": f"normal cell has {skips} skip-connects (limit {self.max_skips})"}
        if self.patience > 0 and len(history) > self.patience:
            names = self.op_names if self.op_names is not None else PRIMITIVES
            weights = [r["arch_weights"] if self.convert is None else self.convert(r["arch_weights"])
                       for r in history[-(self.patience + 1):]]
            window = [learnable_ranking(w, names) for w in weights]
            if all(r == window[0] for r in window[1:]):
                return {"criterion": "ranking_stable", "epoch": last["epoch"],
                        "detail": f"learnable ops' ranking unchanged for {self.patience} epochs"}
        return None


def dartsplus_stopper(relax: Any, max_skips: int = 2, patience: int = 10, per_choice: bool = False
                      ) -> DartsPlusStopper:
    """The DARTS+ stopper of a relaxed space (``nasforge.oneshot.relax.Relaxation``): the candidate names of
    each record group's rows, and the arch labels of the normal cell (or of every label without one).

    ``per_choice``: the method records ``{"layers": {label or label[row]: {name: p}}}`` (ProxylessNAS)
    rather than the relaxation's groups."""
    names: dict[str, list[tuple[str, ...]]] = {}
    for label in relax.labels:
        names.setdefault(relax.groups[label], []).extend([tuple(relax.names[label])] * relax.shapes[label][0])
    counted = [label for label in relax.labels if relax.groups[label] == "normal"] or list(relax.labels)
    probs = relax.probs()
    cell_labels: list[str] = []
    for label in counted:  # the arch labels each counted choice derives (a darts node: inputs, op0, op1)
        cell_labels += list(relax.modules[label][0].derive(probs))
    def convert(record: dict[str, Any]) -> dict[str, list[list[float]]]:
        layers, groups = record["layers"], {}
        for label in relax.labels:
            rows = relax.shapes[label][0]
            for r in range(rows):
                probs = layers[label if rows == 1 else f"{label}[{r}]"]
                groups.setdefault(relax.groups[label], []).append([probs[n] for n in relax.names[label]])
        return groups

    return DartsPlusStopper(max_skips, patience, names, cell_labels, convert if per_choice else None)


def _normal_cell_ops(arch: dict[str, Any]) -> list[str]:
    """Op names of the normal cell of a darts arch dict (``Arch.to_dict`` form)."""
    choices = arch["choices"]
    return [v for k, v in choices.items() if k.startswith("normal.") and ".op" in k]
