"""Building models from a plant's own images (`lineinspect teach`)."""
