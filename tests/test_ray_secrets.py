"""API keys stay secret on a Ray run: none in Ray's session folder (logs, runtime env, spilled
objects, exported events), none in any file the run writes, none in its messages; and the run
still authenticates (the stub server checks the `Authorization` header against a hash of the
key, so the key itself is never written anywhere by the test either).

The module starts one local Ray whose session folder is a directory of its own (`RAY_TMPDIR`),
from an environment holding no key: its workers can only have the keys realign hands them.
Each test runs `realign run --engine ray --address …` in a subprocess holding the keys, then
searches that folder and every file the run wrote byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packs import write_pack
from pydantic import SecretStr
from subprocess_runs import realign_run_argv, run_env

from realign.credentials import (
    Credentials,
    is_secret_name,
    looks_like_credential,
    redact,
    shareable_env,
)
from realign.distributed.keys import KeyServer
from realign.distributed.run import ENV_PREFIXES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess  # noqa: E402

RAY_TIMEOUT_S = 240


def sentinel(tag: str) -> str:
    """A key no file could hold by chance; not shaped like `sk-…`, so only redaction by value
    (not by pattern) can hide it."""
    return f"rk{tag}{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, Path]]:
    """(address, session root) of a local Ray started without any key in its environment."""
    import ray

    # Ray's session folder holds Unix sockets, whose paths must stay under ~107 bytes: a
    # pytest tmp_path is too deep, so a short folder of the module's own under /tmp.
    root = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))
    held = {k: os.environ.pop(k) for k in list(os.environ) if is_secret_name(k)}
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    try:
        ctx = ray.init(
            num_cpus=3,
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=str(root),
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
        yield ctx.address_info["gcs_address"], root
    finally:
        ray.shutdown()
        os.environ.update(held)
        shutil.rmtree(root, ignore_errors=True)


def alpaca(n: int) -> str:
    return "".join(
        json.dumps(
            {
                "instruction": f"Question {i}: who wrote book {i}?",
                "input": "",
                "output": f"Author {i} wrote book {i} in the year {1900 + i}.",
                "id": f"r{i}",
            }
        )
        + "\n"
        for i in range(n)
    )


def files_holding(roots: list[Path], needles: list[str]) -> list[str]:
    """Every regular file under `roots` (and how many were searched) that contains a needle."""
    hits = []
    wanted = [n.encode() for n in needles]
    for root in roots:
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                hits += [f"{path}: {n.decode()}" for n in wanted if n in data]
    return hits


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def ray_run(
    tmp_path: Path, cluster: tuple[str, Path], url: str, n: int, keys: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "in.jsonl"
    src.write_text(alpaca(n))
    pack = write_pack(tmp_path / "pack")
    argv = realign_run_argv(src, tmp_path / "out.jsonl", pack, url, concurrency=4)
    env = run_env(
        tmp_path / "home",
        keys["OPENAI_API_KEY"],
        RAY_TMPDIR=str(cluster[1]),
        # Ray Data's export events carry each operator's arguments: write them too.
        RAY_enable_export_api_write="1",
        **{k: v for k, v in keys.items() if k != "OPENAI_API_KEY"},
    )
    # The driver learns the cluster's token mode itself (`distributed/auth.py`), as a user's
    # would: not from the mode `ray.init` set in this process's environment.
    env.pop("RAY_AUTH_MODE", None)
    return subprocess.run(
        [*argv, "--engine", "ray", "--workers", "2", "--address", cluster[0]],
        env=env,
        capture_output=True,
        text=True,
        timeout=RAY_TIMEOUT_S,
    )


def all_keys() -> dict[str, str]:
    return {
        "OPENAI_API_KEY": sentinel("o"),
        "SERPER_API_KEY": sentinel("s"),  # unused by this run: must not travel either
        "HF_TOKEN": sentinel("h"),
        "REALIGN_PROXY_PASSWORD": sentinel("p"),
    }


@pytest.mark.ray
@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
def test_a_ray_run_authenticates_and_writes_its_key_nowhere(
    tmp_path: Path, cluster: tuple[str, Path]
) -> None:
    keys = all_keys()
    digest = hashlib.sha256(keys["OPENAI_API_KEY"].encode()).hexdigest()
    n = 40
    with serve_in_subprocess(ServerConfig(latency=0.01, key_sha256=digest)) as url:
        res = ray_run(tmp_path, cluster, url, n, keys)
        stats = fetch_stats(url)
    assert res.returncode == 0, res.stderr[-3000:]
    # The workers sent the driver's key: every request authenticated.
    assert stats.auth_rejected == 0 and stats.auth_ok == stats.requests >= n, stats
    out = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in out] == [f"r{i}" for i in range(n)]

    root = cluster[1]
    assert list(root.rglob("session_*")) and count_files(root) > 20, "no session folder"
    assert list(root.rglob("runtime_env*.log")), "no runtime env log to search"
    leaks = files_holding([root, tmp_path], list(keys.values()))
    leaks += [f"output: {k}" for k in keys.values() if k in res.stdout + res.stderr]
    assert leaks == []


@pytest.mark.ray
@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
def test_a_worker_error_quoting_the_key_carries_no_key(tmp_path: Path, cluster: tuple[str, Path]) -> None:
    keys = all_keys()
    # The provider rejects the key and quotes it back in its error, on every request. Fewer
    # requests than the breaker's window: every record fails, and the run writes its files.
    n = 40
    with serve_in_subprocess(ServerConfig(echo_rejected_key=True)) as url:
        res = ray_run(tmp_path, cluster, url, n, keys)
        stats = fetch_stats(url)
    assert stats.auth_rejected == stats.requests >= n, stats
    text = res.stdout + res.stderr
    assert res.returncode == 1, text[-3000:]
    failures = [json.loads(x) for x in (tmp_path / "out.failures.jsonl").read_text().splitlines()]
    assert len(failures) == n
    for f in failures:  # the provider's words are kept, its quote of the key is not
        assert "401" in f["error"] and "Incorrect API key provided: ***" in f["error"], f
    leaks = files_holding([cluster[1], tmp_path], list(keys.values()))
    leaks += [f"output: {k}" for k in keys.values() if k in text]
    assert leaks == []


@pytest.mark.ray
def test_the_driver_learns_the_clusters_token_mode(cluster: tuple[str, Path]) -> None:
    from realign.distributed.auth import cluster_auth_mode

    # `ray.init` sets the mode it started the cluster in (token, unless told otherwise).
    assert cluster_auth_mode(cluster[0]) == os.environ.get("RAY_AUTH_MODE", "disabled")


# ---------------------------------------------------------------- without Ray


def test_runtime_env_gets_settings_but_no_secret() -> None:
    env = {
        "REALIGN_HOME": "/home/someone/.realign",
        "REALIGN_MODEL": "gpt-4o-mini-2024-07-18",
        "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
        "GOOGLE_CSE_ID": "017576662512468239146:omuauf_lfve",
        "TIKTOKEN_CACHE_DIR": "/tmp/tiktoken",
        "OPENAI_API_KEY": "anything at all",
        "HF_TOKEN": "x",
        "REALIGN_DB_PASSWORD": "hunter2",
        "REALIGN_CLIENT_SECRET": "s",
        "REALIGN_EXTRA": "sk-proj-abcdefghijklmnop",  # named innocently, shaped like a key
        "REALIGN_OTHER": "Zq8xT3kLm9vR2wYp5nB7cD1fG4hJ6",  # a long random token
        "OPENAI_PROXY": "http://user:pa55word@proxy:3128",  # a URL with a password
        "PATH": "/usr/bin",
    }
    assert shareable_env(env, ENV_PREFIXES) == {
        k: env[k]
        for k in (
            "REALIGN_HOME",
            "REALIGN_MODEL",
            "OPENAI_BASE_URL",
            "GOOGLE_CSE_ID",
            "TIKTOKEN_CACHE_DIR",
        )
    }
    assert not looks_like_credential("/tmp/pytest-of-root/pytest-12/test_run_ray0/home")
    assert looks_like_credential("a3f9c2d4e5b6a7c8d9e0f1a2b3c4d5e6f7")


def test_objects_holding_keys_never_show_them() -> None:
    from realign.llm.build import EngineOptions
    from realign.llm.openai_backend import OpenAIBackend
    from realign.pipeline.build import RunSettings
    from realign.search.serper import SerperSearch

    key = sentinel("r")
    creds = Credentials.from_env({"GOOGLE_API_KEY": key, "SERPER_API_KEY": key})
    opts = EngineOptions(api_key=creds.google_api_key)
    settings = RunSettings(input=Path("i"), output=Path("o"), engine=opts, credentials=creds)
    objects = [
        creds,
        opts,
        settings,
        OpenAIBackend("m", api_key=key),
        SerperSearch(key),
        KeyServer(),
    ]
    for obj in objects:
        assert key not in repr(obj) and key not in str(obj), type(obj).__name__
    # A key handed to realign is masked in any text, whatever its shape.
    assert redact(f"server said: bad key {key}!") == "server said: bad key ***!"
    from realign.records import Failure

    assert key not in Failure(id="a", index=0, stage="rewrite", error=f"echo {key}").error


def test_a_ray_driver_without_a_key_leaves_it_to_the_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from realign.errors import UsageError
    from realign.llm.build import EngineOptions, make_backend

    monkeypatch.setenv("REALIGN_HOME", str(tmp_path))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    opts = EngineOptions(backend="openai")
    with pytest.raises(UsageError, match="needs an API key"):
        make_backend(opts)  # the local engine, or a Ray worker whose node has no key either
    backend = make_backend(EngineOptions(backend="openai", key_optional=True))
    assert backend.backend_id == make_backend(
        EngineOptions(backend="openai", api_key=SecretStr(sentinel("k")))
    ).backend_id  # the driver's view of the run is the same, key or not
