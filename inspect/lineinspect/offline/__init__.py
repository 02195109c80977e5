"""Offline tools: check, evaluate, retune, calibrate, datasets, sample parts."""
