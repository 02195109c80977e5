"""station.yaml `opcua_server:`: the optional OPC UA server where the MES reads results (OPC 40100 shape)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lineinspect.errors import ConfigError


class OpcUaUser(BaseModel):
    """One account of the server; its password comes from an environment variable, never from station.yaml."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(..., min_length=1, description="User name the MES logs in with.")
    password_env: str = Field(..., min_length=1, description="Environment variable holding this user's password.")


class OpcUaServerSettings(BaseModel):
    """An OPC UA server in the station: the station, its cameras (one MachineVision VisionSystemType each) and
    each camera's latest result. Only Basic256Sha256 with SignAndEncrypt and a user name and password are
    accepted. Absent from station.yaml: no server."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(4840, ge=1, le=65535, description="TCP port (4840 is OPC UA's).")
    path: str = Field(
        "lineinspect", pattern=r"^[A-Za-z0-9_.-]*$", description="Endpoint path: opc.tcp://host:port/path."
    )
    application_uri: str | None = Field(
        None,
        min_length=1,
        description="The server's application URI; it must be the URI in the certificate's subjectAltName. "
        "Default: urn:lineinspect:<station id>.",
    )
    nodeset_file: Path = Field(
        ...,
        description="The OPC Foundation's Machine Vision information model, Opc.Ua.MachineVision.NodeSet2.xml "
        "(OPC 40100-1, from the UA-Nodeset repository, MachineVision/); relative to the station directory.",
    )
    certificate_file: Path = Field(
        ...,
        description="The server's application instance certificate (DER or PEM, RSA); relative to the station "
        "directory.",
    )
    private_key_file: Path = Field(
        ..., description="Its private key (PEM, unencrypted); relative to the station directory."
    )
    users: list[OpcUaUser] = Field(..., min_length=1, description="Accounts allowed to log in (read only).")
    state_poll_ms: int = Field(
        500, ge=50, le=60_000, description="How often camera states are read into each SystemState, ms."
    )

    @model_validator(mode="after")
    def _users_unique(self) -> OpcUaServerSettings:
        names = [u.username for u in self.users]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"users: user names must be unique; repeated: {repeated}")
        return self

    def passwords(self, environ: Mapping[str, str]) -> dict[str, str]:
        """User name → password from each user's environment variable; an unset or empty one is refused."""
        missing = [f"{u.username} (${u.password_env})" for u in self.users if not environ.get(u.password_env)]
        if missing:
            raise ConfigError(
                f"opcua_server.users: no password set for {', '.join(missing)}; set each password_env "
                "variable in the station's environment (passwords never go in station.yaml)"
            )
        return {u.username: environ[u.password_env] for u in self.users}

    def files(self, station_dir: Path) -> dict[str, Path]:
        """nodeset_file, certificate_file, private_key_file resolved; a missing one is refused by its field."""
        found: dict[str, Path] = {}
        for name in ("nodeset_file", "certificate_file", "private_key_file"):
            value: Path = getattr(self, name)
            path = value if value.is_absolute() else station_dir / value
            if not path.is_file():
                raise ConfigError(f"opcua_server.{name}: {path} not found")
            found[name] = path
        return found
