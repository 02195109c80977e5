"""reject: settings are checked against the line's physics when station.yaml is loaded."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lineinspect.config import parse_station
from lineinspect.errors import ConfigError
from lineinspect.line.reject.settings import RejectSettings


def timed(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "mode": "timed",
        "backend": {"type": "dry_run"},
        "inspection_budget_ms": 120,
        "actuator_latency_ms": 5,
        "delay_ms": 200,
        "pulse_width_ms": 20,
        "line_rate_parts_per_min": 1200,
    }
    raw.update(overrides)
    return raw


def problems(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        RejectSettings.model_validate(raw)
    return str(info.value)


def test_valid_timed_settings_load() -> None:
    s = RejectSettings.model_validate(timed())
    assert s.spacing_ms == 50.0 and s.physics_problems() == []


def test_delay_shorter_than_budget_names_field_and_minimum() -> None:
    msg = problems(timed(delay_ms=80))
    assert (
        "reject.delay_ms 80 is shorter than the worst-case inspection budget 120 ms (reject.inspection_budget_ms) "
        "+ actuator latency 5 ms (reject.actuator_latency_ms): every part would reach the ejector before its "
        "verdict. Increase reject.delay_ms to at least 125 (move the ejector further from the camera) or lower "
        "reject.inspection_budget_ms"
    ) in msg


def test_pulse_longer_than_part_spacing_is_refused() -> None:
    msg = problems(timed(pulse_width_ms=60))
    assert (
        "reject.pulse_width_ms 60 is longer than the part spacing 50 ms (reject.line_rate_parts_per_min 1200): the "
        "ejector would also hit the next part. Shorten reject.pulse_width_ms to at most 50 or lower the line rate"
    ) in msg


def test_pulse_checked_against_part_spacing_ms_when_given() -> None:
    msg = problems(timed(line_rate_parts_per_min=None, part_spacing_ms=15))
    assert "part spacing 15 ms (reject.part_spacing_ms)" in msg


def test_missing_line_rate_is_refused() -> None:
    assert "set reject.line_rate_parts_per_min (or reject.part_spacing_ms)" in problems(
        timed(line_rate_parts_per_min=None)
    )


def test_encoder_travel_shorter_than_budget_gives_minimum_counts() -> None:
    msg = problems(timed(delay_ms=None, encoder_counts=500, encoder_counts_per_s_max=10_000))
    assert "reject.encoder_counts 500 is 50.0 ms of travel at 10000 counts/s (reject.encoder_counts_per_s_max)" in msg
    assert "Increase reject.encoder_counts to at least 1250" in msg


def test_delay_and_encoder_together_are_refused() -> None:
    msg = problems(timed(encoder_counts=5000, encoder_counts_per_s_max=10_000))
    assert "timed mode needs exactly one of reject.delay_ms or reject.encoder_counts" in msg


def test_plc_deadline_shorter_than_budget_is_refused() -> None:
    raw = timed(mode="verdict_to_plc", delay_ms=None, plc_deadline_ms=100)
    assert "reject.plc_deadline_ms 100 is shorter than the worst-case inspection budget 120 ms" in problems(raw)


def test_ack_timeout_longer_than_spacing_is_refused() -> None:
    raw = timed(
        mode="verdict_to_plc",
        delay_ms=None,
        plc_deadline_ms=300,
        backend={"type": "modbus", "host": "127.0.0.1", "result_valid_coil": 1, "ack_input": 0},
        handshake={"enabled": True, "ack_timeout_ms": 80},
    )
    assert "reject.handshake.ack_timeout_ms 80 is longer than the part spacing 50 ms" in problems(raw)


def test_handshake_without_result_valid_output_is_refused() -> None:
    raw = timed(
        mode="verdict_to_plc",
        delay_ms=None,
        plc_deadline_ms=300,
        backend={"type": "modbus", "host": "127.0.0.1"},
        handshake={"enabled": True},
    )
    assert "names no result-valid output" in problems(raw)


def test_timed_mode_without_ejector_output_is_refused() -> None:
    raw = timed(backend={"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"})
    assert "timed mode needs an ejector output; set the opcua backend's ejector address" in problems(raw)


def test_timed_mode_with_opcua_pulse_method_needs_no_ejector_node() -> None:
    # The PLC times the pulse itself: the method stands in for the ejector output.
    raw = timed(backend={"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840", "pulse_method": "ns=2;s=Pulse"})
    assert RejectSettings.model_validate(raw).physics_problems() == []


def test_backend_names_its_mapped_inputs_only() -> None:
    backend = {"type": "modbus", "host": "127.0.0.1", "ack_input": 2, "bin_full_input": 0}
    s = RejectSettings.model_validate(timed(backend=backend))
    assert s.backend.input_addresses() == {"bin_full": 0, "ack": 2}


def test_stop_line_without_output_is_refused() -> None:
    raw = timed(backend={"type": "modbus", "host": "127.0.0.1"}, stop_line=True)
    assert "reject.stop_line is true but the modbus backend names no stop-line output" in problems(raw)


def test_unknown_field_is_refused() -> None:
    assert "Extra inputs are not permitted" in problems(timed(delay=200))


def test_station_yaml_with_bad_reject_section_names_file_and_field() -> None:
    raw = {"recipes": [{"id": "a", "model": "m"}], "reject": timed(delay_ms=80)}
    with pytest.raises(ConfigError) as info:
        parse_station(raw, "/plant/station.yaml")
    text = str(info.value)
    assert text.startswith("/plant/station.yaml: invalid configuration:")
    assert "reject: Value error, reject.delay_ms 80 is shorter" in text


def test_station_without_reject_section_has_none() -> None:
    assert parse_station({"recipes": [{"id": "a", "model": "m"}]}, "s.yaml").reject is None


def test_neuron_default_topics_follow_app_name() -> None:
    s = RejectSettings.model_validate(
        timed(backend={"type": "neuron", "host": "h", "app": "north", "node": "n", "group": "g", "ejector_tag": "e"})
    )
    backend = s.backend
    assert backend.type == "neuron"
    assert (backend.write_request, backend.write_response) == ("/neuron/north/write/req", "/neuron/north/write/resp")
