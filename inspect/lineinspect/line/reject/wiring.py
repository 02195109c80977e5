"""Builds the reject path from `reject:` settings (called by the station runtime's one wiring place).

Backends are imported on demand so pymodbus and asyncua (the optional `plc`
extra) are needed only by stations that use them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lineinspect.line.reject.actuator import Actuator
from lineinspect.line.reject.alarms import AlarmSink
from lineinspect.line.reject.audit import AuditTrail, RejectCounters
from lineinspect.line.reject.dryrun import DryRunActuator, DryRunPublish
from lineinspect.line.reject.settings import ModbusBackend, NeuronBackend, OpcUaBackend, RejectSettings
from lineinspect.line.reject.tracker import RejectTracker


def build_actuator(
    settings: RejectSettings, *, publish: DryRunPublish | None = None, counters: RejectCounters | None = None
) -> Actuator:
    """counters: the tracker's; the dry-run actuator's summary says from them why it would have fired."""
    backend = settings.backend
    if isinstance(backend, ModbusBackend):
        from lineinspect.line.reject.modbus import ModbusActuator

        return ModbusActuator(backend)
    if isinstance(backend, OpcUaBackend):
        from lineinspect.line.reject.opcua import OpcUaActuator

        return OpcUaActuator(backend, pulse_width_ms=settings.pulse_width_ms)
    if isinstance(backend, NeuronBackend):
        from lineinspect.line.reject.neuron import NeuronActuator

        return NeuronActuator(backend)
    return DryRunActuator(publish, counters=counters)


def build_reject_tracker(
    settings: RejectSettings,
    station_dir: Path,
    *,
    on_alarm: AlarmSink | None = None,
    publish: DryRunPublish | None = None,
    encoder_position: Callable[[], int] | None = None,
    counters: RejectCounters | None = None,
) -> RejectTracker:
    """A tracker ready for `start()` (which refuses an unreachable actuator). `close()` also closes the audit."""
    counters = RejectCounters() if counters is None else counters
    audit = AuditTrail(station_dir / settings.audit_dir)
    try:
        actuator = build_actuator(settings, publish=publish, counters=counters)
        return RejectTracker(
            settings, actuator, audit, counters=counters, on_alarm=on_alarm, encoder_position=encoder_position
        )
    except BaseException:
        audit.close()
        raise
