"""The one place an `Engine` is built from options: backend (flags > environment > config
file > defaults), cache, concurrency, rate limits, budget. Every command that calls a model
(`run`, `classify`, `judge`, `rephrase`, `generate`, `filter`) and the search-only `retrieve`
build theirs here, so the defaults below are the defaults everywhere (and in `--help`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

from pydantic import SecretStr

from realign.errors import UsageError

if TYPE_CHECKING:  # `--help` imports the defaults below without loading the engine
    from realign.llm.engine import Engine

LOCAL_CONCURRENCY = 2  # llama.cpp serves one request at a time; one more keeps it busy
HOSTED_CONCURRENCY = 32
SEARCH_CONCURRENCY = 8  # search-only runs: providers throttle far below LLM APIs
HOSTED_REQUEST_TIMEOUT_S = 120.0
LOCAL_REQUEST_TIMEOUT_S = 900.0  # the embedded model queues requests on 2 cores
CONCURRENCY_HELP = (
    f"Requests in flight at most (default: {HOSTED_CONCURRENCY} hosted, {LOCAL_CONCURRENCY} local)."
)


@dataclass(frozen=True)
class EngineOptions:
    """What every command that calls a model may set; None means "not given"."""

    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_cost: float | None = None
    no_cache: bool = False
    batch: bool = False
    # The model when none is configured anywhere and the backend is not the embedded one
    # (the judge defaults to a GPT-4-class model); None: the backend's own default.
    default_model: str | None = None
    # The API key given with the options (a Ray run's driver hands its key to the workers so);
    # None: the environment or the config file. SecretStr: this object's repr never shows it.
    api_key: SecretStr | None = None
    # An openai backend without a key is built all the same: a Ray run's driver, which sends
    # no request, whose workers may read the key from the cluster's environment.
    key_optional: bool = False

    def flags(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "base_url": self.base_url,
            "api_key": self.api_key,
        }

    def limits(self) -> dict[str, Any]:
        """Only the limits given, so the engine's own defaults apply otherwise."""
        given = {"rpm": self.rpm, "tpm": self.tpm, "max_cost": self.max_cost}
        return {k: v for k, v in given.items() if v is not None}


async def close_all(closers: list[Callable[[], Any]]) -> None:
    """Call each closer in order, awaiting those that return an awaitable."""
    for close in closers:
        out = close()
        if hasattr(out, "__await__"):
            await out


@dataclass
class BuiltEngine:
    engine: Engine
    closers: list[Callable[[], Any]]

    async def aclose(self) -> None:
        await close_all(self.closers)


def llm_configured(opts: EngineOptions) -> bool:
    """Whether a backend is set anywhere (flag, environment, config file, API key)."""
    from realign.config import load_settings

    s = load_settings(opts.flags())
    return bool(s.backend or s.base_url or s.api_key)


def goes_local(opts: EngineOptions) -> bool:
    """Whether these options end at the embedded local model."""
    from realign.config import load_settings

    s = load_settings(opts.flags())
    return s.backend == "local" or (not s.backend and not s.api_key and not s.base_url)


def make_backend(opts: EngineOptions, stderr: IO[str] | None = None) -> Any:
    """The backend from flags > environment > config file > defaults (see realign.config)."""
    from realign.config import ConfigError, load_settings
    from realign.llm.registry import resolve_backend

    try:
        settings = load_settings(opts.flags())
        if opts.key_optional and settings.backend == "openai" and not settings.api_key:
            from realign.llm.openai_errors import OPENAI_BASE_URL

            settings = settings.model_copy(
                update={"base_url": settings.base_url or OPENAI_BASE_URL}
            )
        if settings.model is None and opts.default_model and not goes_local(opts):
            settings = settings.model_copy(update={"model": opts.default_model})
        return resolve_backend(settings, stderr=cast("TextIO | None", stderr))
    except (ConfigError, ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from e


def pricing_model(opts: EngineOptions) -> str:
    """The model a run would use, for the `--dry-run` price ("local" is free)."""
    from realign.config import DEFAULT_OPENAI_MODEL, load_settings

    s = load_settings(opts.flags())
    if s.model:
        return s.model
    if goes_local(opts):
        return "local"
    return opts.default_model or DEFAULT_OPENAI_MODEL


def build_engine(
    opts: EngineOptions, *, llm: bool = True, stderr: IO[str] | None = None
) -> BuiltEngine:
    """The engine for these options and what to close after it. `llm=False`: no backend at
    all (search-only runs; `classify --method embedding` with no model configured)."""
    from realign.llm.cache import Cache
    from realign.llm.engine import Engine

    backend = make_backend(opts, stderr) if llm else None
    cache = None if opts.no_cache else Cache()
    closers: list[Callable[[], Any]] = []
    if opts.batch and (cache is None or backend is None or backend.name != "openai"):
        raise UsageError(
            "--batch needs the openai backend and the cache (answers are collected into it)"
        )
    local = backend is not None and backend.name == "local"
    if backend is None:
        concurrency = opts.concurrency or SEARCH_CONCURRENCY
    else:
        concurrency = opts.concurrency or (LOCAL_CONCURRENCY if local else HOSTED_CONCURRENCY)
    try:
        engine = Engine(
            backend,
            concurrency=concurrency,
            cache=cache,
            # The embedded model queues requests on 2 cores: a long wait is not a failure.
            request_timeout=LOCAL_REQUEST_TIMEOUT_S if local else HOSTED_REQUEST_TIMEOUT_S,
            defer_to=[] if opts.batch else None,
            batch_pricing=opts.batch,
            **opts.limits(),
        )
    except ValueError as e:  # e.g. --max-cost for a model without a price
        if cache is not None:
            cache.close()
        raise UsageError(str(e)) from e
    closers.append(engine.aclose)
    if cache is not None:
        closers.append(cache.close)
    return BuiltEngine(engine, closers)
