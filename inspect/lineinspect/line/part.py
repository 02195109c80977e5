"""PartRef lives in lineinspect.core.part; this name goes once every import uses that one."""

from lineinspect.core.part import PartRef

__all__ = ["PartRef"]
