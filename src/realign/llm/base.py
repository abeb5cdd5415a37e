"""The small interface every LLM backend implements, and the request/response types.

Stages never talk to a backend directly: they build a `ChatRequest` and hand it to the
engine (`realign.llm.engine.Engine.chat`), which adds caching, rate limiting, retries, re-asking
on invalid structured output and cost accounting, then calls `Backend.chat`.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import AfterValidator, BaseModel, Field, PrivateAttr, WithJsonSchema

from realign.hashing import digest

SHORT_TEXT_CHARS = 400

# A free-text field (a reason, a rationale) that the schema bounds, so grammar-constrained
# local models cannot ramble until max_tokens cuts the JSON off, but that validation only
# trims: a hosted model writing a little more is not re-asked (and paid) for it.
ShortText = Annotated[
    str,
    AfterValidator(lambda s: s[:SHORT_TEXT_CHARS]),
    WithJsonSchema({"type": "string", "maxLength": SHORT_TEXT_CHARS}),
]


class Message(BaseModel):
    role: str  # "system" | "user" | "assistant"
    content: str


class ChatRequest(BaseModel):
    """One LLM call. `schema_name` + `json_schema` describe the structured output wanted."""

    stage: str  # "classify", "rewrite", "judge", … (for stats and the cost table)
    messages: list[Message]
    json_schema: dict[str, Any] | None = None  # pydantic `model_json_schema()` of the output
    schema_name: str | None = None
    n: int = 1
    temperature: float = 0.0
    max_tokens: int | None = None
    record_id: str | None = None  # for error messages only; not part of the cache key

    def cache_key(self, backend_id: str) -> str:
        """Hash of everything that determines the answer (backend id includes base URL + model)."""
        payload = self.model_dump(exclude={"record_id", "stage"})
        payload["backend"] = backend_id
        return digest(payload)


def for_record(request: ChatRequest) -> str:
    """ " for record ID" when the request names its record, for error messages; else ""."""
    return f" for record {request.record_id}" if request.record_id else ""


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatResponse(BaseModel):
    """What a backend returns: `n` raw texts (JSON text for structured requests)."""

    texts: list[str]
    usage: Usage = Field(default_factory=Usage)
    # Why each text ended, when the backend says ("stop"; "length": cut off by max_tokens).
    finish_reasons: list[str | None] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. x-ratelimit-* when available
    cached: bool = False
    # (request, its cache key) this answered, set by the engine so that storing the answer
    # does not hash the request a second time (~0.1 ms for a rewrite request).
    _asked: tuple[ChatRequest, str] | None = PrivateAttr(default=None)

    def finish_reason(self, i: int) -> str | None:
        """Why text `i` ended; None when the backend did not say."""
        return self.finish_reasons[i] if i < len(self.finish_reasons) else None


class BackendError(RuntimeError):
    """A backend failure. `retryable` tells the engine whether to try again."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.headers = headers or {}


@runtime_checkable
class Backend(Protocol):
    name: str  # registry name: "openai", "local", "fake"
    model: str

    @property
    def backend_id(self) -> str:
        """Identifies where answers come from (name, base URL, model): part of every cache key."""
        ...

    @property
    def supports_n(self) -> bool:
        """True when one request with `n` returns n candidates."""
        ...

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """One request, no retries (the engine retries). Raise BackendError on failure."""
        ...

    async def aclose(self) -> None: ...


def as_backend_error(exc: BaseException, timeout: float) -> BackendError:
    """What the engine retries: a timeout or a connection error as a retryable BackendError."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, TimeoutError):
        return BackendError(f"no answer within {timeout:g}s (request timeout)", retryable=True)
    if isinstance(exc, ConnectionRefusedError):
        return BackendError(f"connection refused (is the server running?): {exc}", retryable=True)
    return BackendError(f"connection error: {exc}", retryable=True)


def endpoint_fault(err: BackendError) -> bool:
    """Failures that say the endpoint (or key) is unwell, as opposed to one bad request
    (400, 413, 422: that record's problem, reported with it): these feed the breaker."""
    return err.status is None or err.status >= 500 or err.status in (401, 403, 404, 408)


def describe(err: BackendError) -> str:
    """The error as the engine reports it, with its HTTP status."""
    status = f"HTTP {err.status}: " if err.status else ""
    return f"{status}{err}"
