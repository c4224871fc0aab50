"""latency (see DESIGN.md)."""
