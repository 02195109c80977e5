"""The image archive: frames of rejected and sampled parts, their index, and the reviews of them (DESIGN.md §12)."""
