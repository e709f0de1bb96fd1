"""Report sections, one per method family; each reads a run and returns its part of the page."""
