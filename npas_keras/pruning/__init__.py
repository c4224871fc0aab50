"""pruning (see DESIGN.md)."""
