"""Backends by name, and the rule that picks one when none is named.

    settings = load_settings({"model": "gpt-4o-mini"})
    backend = resolve_backend(settings)   # openai if a key or base URL is set, else local
    # `--backend langchain`: the same server through LangChain's ChatOpenAI
    async with contextlib.aclosing(backend): ...   # or: await backend.aclose()

Another backend plugs in with `register_backend("name", factory)`; a factory takes the
resolved `Settings` and returns a `Backend`. Factories import their heavy dependencies
themselves, so listing backends costs nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from realign.config import DEFAULT_OPENAI_MODEL, ConfigError, Settings
from realign.llm.base import Backend

BackendFactory = Callable[[Settings], Backend]

LOCAL_NOTICE = "using the embedded SmolLM2-135M model (no OPENAI_API_KEY / --base-url set)"

_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory, *, replace: bool = False) -> None:
    if name in _FACTORIES and not replace:
        raise ValueError(f"backend {name!r} is already registered (pass replace=True)")
    _FACTORIES[name] = factory


def available_backends() -> list[str]:
    return sorted(_FACTORIES)


def create_backend(name: str, settings: Settings) -> Backend:
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown backend {name!r} ({_source(settings, 'backend')}); "
            f"choose one of: {', '.join(available_backends())}"
        ) from None
    return factory(settings)


def resolve_backend(settings: Settings, *, stderr: TextIO | None = None) -> Backend:
    """The named backend when one is set (flag, env or config); otherwise `openai` when a key
    or a base URL is configured, else the embedded `local` model (said so on stderr)."""
    if settings.backend:
        return create_backend(settings.backend, settings)
    if settings.api_key or settings.base_url:
        return create_backend("openai", settings)
    print(LOCAL_NOTICE, file=stderr or sys.stderr)
    return create_backend("local", settings)


def _source(settings: Settings, key: str) -> str:
    where = {
        # The one setting no flag sets: an API key handed over with the options (the key a Ray
        # run's driver gives its workers).
        "flag": "from the run's driver" if key == "api_key" else "from the command line",
        "env": "from the environment",
        "config": f"from {settings.home / 'config.toml'}",
        "default": "default",
    }
    return where[settings.sources.get(key, "default")]


# ---------------------------------------------------------------- built-in factories


def _openai(settings: Settings) -> Backend:
    """The lean HTTP path (`llm/openai_backend.py`): what every OpenAI-compatible run takes."""
    from realign.llm.openai_backend import OpenAIBackend

    return OpenAIBackend(**_openai_kwargs(settings))


def _langchain(settings: Settings) -> Backend:
    """LangChain's `ChatOpenAI` on the same settings (`llm/langchain_backend.py`); other
    LangChain chat models plug in from Python (`LangChainBackend(chat_model=…)`)."""
    from realign.llm.langchain_backend import LangChainBackend

    return LangChainBackend(**_openai_kwargs(settings))


def _openai_kwargs(settings: Settings) -> dict[str, Any]:
    from realign.llm.openai_backend import STRUCTURED_METHODS

    key = settings.api_key_value()
    if not key and not settings.base_url:
        raise ConfigError(
            f"the {settings.backend or 'openai'} backend needs an API key: set OPENAI_API_KEY (environment) or "
            f"api_key in {settings.home / 'config.toml'}; or point it at an "
            "OpenAI-compatible server with --base-url / OPENAI_BASE_URL (no key needed); "
            "or use --backend local for the embedded model"
        )
    method = settings.structured_method
    if method is not None and method not in STRUCTURED_METHODS:
        raise ConfigError(
            f"structured_method {method!r} ({_source(settings, 'structured_method')}): "
            f"choose one of {', '.join(STRUCTURED_METHODS)}"
        )
    return {
        "model": settings.model or DEFAULT_OPENAI_MODEL,
        "base_url": settings.base_url,
        "api_key": key,
        "structured_method": method,
        "timeout": settings.timeout,
        "key_source": _source(settings, "api_key") if key else "",
    }


def _local(settings: Settings) -> Backend:
    from pathlib import Path

    from realign.llm.local import LocalBackend, LocalModelError

    # `--model some.gguf` serves that file; any other model name means nothing locally.
    model = settings.model
    path = Path(model).expanduser() if model and model.endswith(".gguf") else None
    if path is not None and not path.is_file():
        raise ConfigError(f"model {model} ({_source(settings, 'model')}): no such GGUF file")
    try:
        return LocalBackend(path)
    except LocalModelError as e:  # not installed: a setup problem, not a model failure
        raise ConfigError(str(e)) from None


def _fake(settings: Settings) -> Backend:
    from realign.llm.fake import FakeBackend

    return FakeBackend(model=settings.model or "fake-model")


register_backend("openai", _openai)
register_backend("langchain", _langchain)
register_backend("local", _local)
register_backend("fake", _fake)
