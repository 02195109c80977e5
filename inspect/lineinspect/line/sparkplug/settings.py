"""station.yaml `sparkplug:`: the optional Sparkplug B edge node beside the QoS 1 result channel."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lineinspect.line.mqtt import MqttTls

# Sparkplug ids are MQTT topic levels: no wildcards, no separators (specification 3.0, §4.1.1).
SPARKPLUG_ID = r"^[^+#/]+$"


class SparkplugSettings(BaseModel):
    """A Sparkplug B edge node (the station) with one device per camera. Absent from station.yaml: none.

    Sparkplug is a live view for SCADA (its data messages are QoS 0): it never replaces the QoS 1 result
    channel, and results the broker missed while it was away are not replayed (the births after a reconnect
    carry each camera's latest result).
    """

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(..., pattern=SPARKPLUG_ID, description="Sparkplug group id (spBv1.0/<group_id>/...).")
    edge_node_id: str | None = Field(
        None, pattern=SPARKPLUG_ID, description="Edge node id of the station; default: the station id."
    )
    host: str | None = Field(
        None,
        min_length=1,
        description="Broker of the SCADA host; null: the station's own MQTT broker (mqtt: section, with its "
        "port, user name, password and TLS).",
    )
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port (with host).")
    username: str | None = Field(None, description="User name for the broker (with host); default: anonymous.")
    password_env: str = Field(
        "LINEINSPECT_SPARKPLUG_PASSWORD",
        min_length=1,
        description="Environment variable holding the broker password (with host); unset: none is sent.",
    )
    tls: MqttTls | None = Field(None, description="TLS to the broker (with host); absent: plain TCP.")
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="MQTT client id; default: lineinspect-<station id>-spb (never the result channel's).",
    )
    keepalive_s: int = Field(
        30,
        ge=5,
        le=3600,
        description="Keep-alive, s; the broker sends the NDEATH about 1.5 times this after a "
        "silent loss of the station.",
    )
    reconnect_min_delay_s: int = Field(1, ge=1, le=3600, description="First wait before reconnecting, s.")
    reconnect_max_delay_s: int = Field(30, ge=1, le=3600, description="Longest wait between reconnects, s.")
    queue_results: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Results waiting to go out as DDATA; when full the oldest waiting one is dropped (counted): "
        "the inspection never waits for Sparkplug.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SparkplugSettings:
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise ValueError("reconnect_max_delay_s must not be below reconnect_min_delay_s")
        if self.host is None and (self.username is not None or self.tls is not None):
            raise ValueError(
                "username and tls go with host: without host the station's own broker (mqtt:) and its "
                "credentials are used"
            )
        return self

    def password(self, environ: Mapping[str, str]) -> str | None:
        return environ.get(self.password_env) or None
