"""Reject actuation: the reject tracker, its actuator backends, audit trail and alarms (DESIGN.md §6).

The tracker (tracker.py) is one scheduler thread around a shared schedule (schedule.py, context.py); what it
does for a part is its mode's: timed.py (this service pulses the ejector) or plc_verdicts.py (the PLC does,
this service writes verdicts). inputs.py reads the optional inputs, latch.py keeps alarms and the stop line.
"""
