"""Request and response bodies of the admin API (pydantic: validated, and the source of the
OpenAPI document's schemas)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from datafactory.engine.rate import RateProfile

_STRICT = ConfigDict(extra="forbid")


class CreateRun(BaseModel):
    """Exactly one of ``config`` (a named config file), ``spec`` (a config as an object) or
    ``yaml`` (a config as YAML text)."""

    model_config = _STRICT
    config: str | None = Field(None, description="name of a config in the configs folder")
    spec: dict[str, Any] | None = Field(None, description="an inline config (run, packs, sinks...)")
    yaml: str | None = Field(None, description="an inline config as YAML text")
    start: bool = Field(True, description="start it now (else it stays PENDING)")

    @model_validator(mode="after")
    def _one(self) -> CreateRun:
        given = [k for k in ("config", "spec", "yaml") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of config, spec, yaml")
        return self


class RateChange(BaseModel):
    model_config = _STRICT
    profile: RateProfile = Field(description="the new rate profile of the stream")


class ChaosChange(BaseModel):
    """``steps`` replaces the chain; ``rates`` changes the rates of steps by name."""

    model_config = _STRICT
    steps: list[dict[str, Any]] | None = Field(None, description="the whole chaos list")
    rates: dict[str, float] | None = Field(None, description="step name -> new rate (0..1)")

    @model_validator(mode="after")
    def _one(self) -> ChaosChange:
        if (self.steps is None) == (self.rates is None):
            raise ValueError("give exactly one of steps, rates")
        for name, rate in (self.rates or {}).items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rates.{name}: must be between 0 and 1")
        return self


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
