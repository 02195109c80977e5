"""The inspection core: frame in, result out, no I/O."""
