"""Report sections, one per method family; each reads a ``Run`` and returns its ``Section`` or None.

A section is ``fn(run, out_dir) -> Section | None``: it draws its PNGs into ``out_dir`` and
returns None when the run holds nothing of its kind. ``SECTIONS`` is the page's order; add
a section of your own by appending to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from nasforge.report.run import Run, Section
from nasforge.report.sections.cells import cells_section
from nasforge.report.sections.densenas import densenas_section
from nasforge.report.sections.haq import haq_section
from nasforge.report.sections.proxyless import proxyless_section
from nasforge.report.sections.rl import metaqnn_section, reinforce_section
from nasforge.report.sections.training import training_section
from nasforge.report.sections.trials import trials_section
from nasforge.report.sections.weights import weights_section

SectionFn = Callable[[Run, Path], "Section | None"]

SECTIONS: list[SectionFn] = [cells_section, weights_section, training_section, trials_section, proxyless_section,
                             densenas_section, haq_section, reinforce_section, metaqnn_section]

__all__ = ["SECTIONS", "SectionFn", "cells_section", "densenas_section", "haq_section", "metaqnn_section",
           "proxyless_section", "reinforce_section", "training_section", "trials_section", "weights_section"]
