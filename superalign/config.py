"""The base of every experiment config: pydantic, loadable from YAML, errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from superalign.errors import ConfigError

C = TypeVar("C", bound="YamlConfig")


class YamlConfig(BaseModel):
    """A strict config (unknown fields are errors) with YAML loading and dumping."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_yaml(cls: type[C], path: str | Path | None, overrides: dict[str, Any] | None = None) -> C:
        """Load ``path`` (``None``: defaults only), deep-merge ``overrides`` (e.g. from --set), validate."""
        data: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.exists():
                raise ConfigError("config", f"file '{path}' does not exist", "give the path of a YAML config")
            data = yaml.safe_load(path.read_text()) or {}
            if not isinstance(data, dict):
                raise ConfigError("config", f"'{path}' is not a mapping of fields", "write 'field: value' lines")
        return cls.parse(deep_merge(data, overrides or {}), where=str(path or "config"))

    @classmethod
    def parse(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
        """Validate, turning pydantic's errors into one :class:`ConfigError` naming the field and the fix."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, where) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def config_error(exc: ValidationError, where: str) -> ConfigError:
    err = exc.errors()[0]
    field = ".".join(str(x) for x in err["loc"]) or "config"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        fix = f"remove '{field}' (not a field; `superalign <experiment> show-config` prints every field)"
    elif err["type"] == "missing":
        fix = f"add '{field}'"
    elif err["type"] == "literal_error":
        fix = f"use one of the allowed values ({msg})"
    else:
        fix = f"change '{field}' ({err.get('input')!r} given)"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return ConfigError(f"{where}: {field}", msg + more, fix)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
