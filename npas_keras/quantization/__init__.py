"""quantization (see DESIGN.md)."""
