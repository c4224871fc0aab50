"""schemes (see DESIGN.md)."""
