"""export (see DESIGN.md)."""
