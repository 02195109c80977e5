"""lineinspect: line-side computer-vision quality inspection."""

__version__ = "0.1.0"
