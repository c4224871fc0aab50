"""tuner (see DESIGN.md)."""
