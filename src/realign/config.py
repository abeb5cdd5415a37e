"""Settings: command-line flag > environment > config file > default.

Environment variables:
- `OPENAI_API_KEY`, `OPENAI_BASE_URL`: the OpenAI client's usual ones.
- `REALIGN_BACKEND` (`openai`, `local`, `fake`), `REALIGN_MODEL`, `REALIGN_STRUCTURED_METHOD`
  (`json_schema`, `function_calling`, `json_mode`), `REALIGN_TIMEOUT` (seconds per request).
- `REALIGN_HOME`: where realign keeps its cache and config (default `~/.realign`).

Config file `$REALIGN_HOME/config.toml`, top-level keys (other tables belong to other parts
of realign and are ignored here):

    backend = "openai"
    model = "gpt-4o-mini"
    base_url = "http://127.0.0.1:8000/v1"
    api_key = "sk-…"          # prefer OPENAI_API_KEY
    structured_method = "function_calling"
    timeout = 120
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr

Source = Literal["flag", "env", "config", "default"]

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_S = 120.0

# setting name -> environment variables, first one set wins
ENV_VARS: dict[str, tuple[str, ...]] = {
    "backend": ("REALIGN_BACKEND",),
    "model": ("REALIGN_MODEL",),
    "base_url": ("OPENAI_BASE_URL",),
    "api_key": ("OPENAI_API_KEY",),
    "structured_method": ("REALIGN_STRUCTURED_METHOD",),
    "timeout": ("REALIGN_TIMEOUT",),
}
CONFIG_KEYS: dict[str, type] = {
    "backend": str,
    "model": str,
    "base_url": str,
    "api_key": str,
    "structured_method": str,
    "timeout": float,
}


class ConfigError(ValueError):
    """A setting is missing or wrong; the message says what to set and where."""


class Settings(BaseModel):
    """Resolved settings. `sources` says where each value came from (for messages)."""

    backend: str | None = None  # None: choose automatically (see registry.resolve_backend)
    model: str | None = None  # None: the backend's default
    base_url: str | None = None
    api_key: SecretStr | None = None  # SecretStr: never printed by repr / logs
    structured_method: str | None = None  # None: the backend picks for its base URL
    timeout: float = DEFAULT_TIMEOUT_S
    home: Path = Field(default_factory=lambda: realign_home())
    sources: dict[str, Source] = Field(default_factory=dict)

    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


def realign_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("REALIGN_HOME") or "~/.realign").expanduser()


def config_path(env: Mapping[str, str] | None = None) -> Path:
    return realign_home(env) / "config.toml"


def read_config_file(path: Path) -> dict[str, Any]:
    """The realign keys of a config file (missing file: empty). Errors name the file and key."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    out: dict[str, Any] = {}
    for key, kind in CONFIG_KEYS.items():
        if key not in data:
            continue
        value = data[key]
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind):
            raise ConfigError(
                f"{path}: key '{key}' must be a {kind.__name__}, got {type(value).__name__}"
            )
        out[key] = value
    return out


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Settings from `flags` (None values = flag not given) > `env` > config file > defaults."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = set(flags) - set(CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    file_values = read_config_file(config_file or config_path(env))
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for key in CONFIG_KEYS:
        env_value = next((env[v] for v in ENV_VARS[key] if env.get(v)), None)
        if key in flags:
            values[key], sources[key] = flags[key], "flag"
        elif env_value is not None:
            values[key], sources[key] = env_value, "env"
        elif key in file_values:
            values[key], sources[key] = file_values[key], "config"
        else:
            sources[key] = "default"
    if "timeout" in values:
        try:
            values["timeout"] = float(values["timeout"])
        except ValueError:
            raise ConfigError(
                f"timeout ({sources['timeout']}): not a number: {values['timeout']!r}"
            ) from None
    return Settings(**values, home=realign_home(env), sources=sources)
