"""mapping (see DESIGN.md)."""
