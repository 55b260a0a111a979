"""Request and response bodies of the admin API (pydantic: validated, and the source of the
OpenAPI document's schemas)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from datafactory.engine.rate import RateProfile

_STRICT = ConfigDict(extra="forbid")


def _one_of(*names: str) -> Any:
    """Schema: exactly one of ``names``, each non-null when given (pydantic would document
    them as nullable, since they default to None)."""

    def extra(schema: dict[str, Any]) -> None:
        schema["oneOf"] = [{"required": [n]} for n in names]
        for n in names:
            prop = schema["properties"][n]
            alts = [a for a in prop.pop("anyOf", []) if a.get("type") != "null"]
            if alts:
                prop.update(alts[0])
            prop.pop("default", None)

    return extra


def _exactly_one(data: Any, names: tuple[str, ...]) -> Any:
    if isinstance(data, dict):
        for n in names:
            if n in data and data[n] is None:
                raise ValueError(f"{n} must not be null (leave it out)")
        given = [n for n in names if n in data]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(names)}")
    return data


class CreateRun(BaseModel):
    """Exactly one of ``config`` (a named config file), ``spec`` (a config as an object) or
    ``yaml`` (a config as YAML text)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_of("config", "spec", "yaml"))
    config: str | None = Field(None, description="name of a config in the configs folder")
    spec: dict[str, Any] | None = Field(None, description="an inline config (run, packs, sinks...)")
    yaml: str | None = Field(None, min_length=1, description="an inline config as YAML text")
    start: bool = Field(True, description="start it now (else it stays PENDING)")

    @model_validator(mode="before")
    @classmethod
    def _one(cls, data: Any) -> Any:
        return _exactly_one(data, ("config", "spec", "yaml"))


class RateChange(BaseModel):
    model_config = _STRICT
    profile: RateProfile = Field(description="the new rate profile of the stream")


class ChaosChange(BaseModel):
    """``steps`` replaces the chain; ``rates`` changes the rates of steps by name."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_of("steps", "rates"))
    steps: list[dict[str, Any]] | None = Field(None, description="the whole chaos list")
    rates: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(
        None, description="step name -> new rate (0..1)"
    )

    @model_validator(mode="before")
    @classmethod
    def _one(cls, data: Any) -> Any:
        return _exactly_one(data, ("steps", "rates"))


class Error(BaseModel):
    error: str = Field(description="what is wrong, naming the field")
    problems: list[str] = Field(default_factory=list, description="every problem found")


class RunView(BaseModel):
    id: str
    name: str
    state: str
    config_hash: str
    source: str
    created: float
    updated: float
    error: str
    streams: dict[str, Any] = Field(default_factory=dict)
    counters: list[dict[str, Any]] = Field(default_factory=list)
    chaos: dict[str, int] = Field(default_factory=dict)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    history: list[dict[str, Any]] | None = None


class RunList(BaseModel):
    runs: list[RunView]


class ReloadResult(BaseModel):
    reloaded: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
