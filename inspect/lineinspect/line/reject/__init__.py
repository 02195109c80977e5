"""Reject actuation: the reject tracker, its actuator backends, audit trail and alarms (DESIGN.md §6)."""
