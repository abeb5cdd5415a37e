"""`realign run --engine ray` against clusters started as the README shows (`ray start --head`),
with and without Ray's token authentication, joined by `--address auto` and by Ray Client
(`--address ray://…`): every run writes what the local engine writes for the same input.

Each cluster is a real `ray start --head` from the `ray` CLI next to this Python, run in a
process group of its own, with
- `HOME` a folder of the test's own, so `~/.ray/auth_token` is the test's;
- `RAY_TMPDIR` a short folder of its own, for the cluster and for every driver that joins it:
  `ray start` writes its address to `$RAY_TMPDIR/ray/ray_current_cluster` (`/tmp/ray/…` when
  unset), which is where `--address auto` looks first (`--temp-dir` would not do: a driver
  finds `auto` only under its own default temp folder, and would fall back to any GCS process
  on the machine, another test's included);
- ports from a free block of 26000-26999, `--num-cpus 2`, `--node-ip-address 127.0.0.1`.
It is stopped by signalling its own process group (`ray stop` would stop every Ray on the
machine, other test modules' included), and the teardown checks no process of it is left.

Every `realign run` is a subprocess, as a user runs it, with `RAY_AUTH_MODE` unset unless a
case says otherwise. `--backend fake` answers deterministically, so the outputs can be compared
byte for byte (provenance time and command line aside).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from book_records import alpaca, without_time
from packs import TYPES, write_pack

ROOT = Path(__file__).resolve().parents[1]
# The `ray` CLI of this Python (a venv's bin), else the one on PATH.
RAY_CLI = Path(sys.executable).with_name("ray")
if not RAY_CLI.exists():
    RAY_CLI = Path(shutil.which("ray") or RAY_CLI)
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 240
N = 40  # records: more than one block of 32, so two workers share the run

pytestmark = [
    pytest.mark.ray,
    pytest.mark.block_network(allowed_hosts=["127.0.0.1"]),
    pytest.mark.skipif(not RAY_CLI.exists(), reason="no `ray` CLI: install the `ray` extra"),
]

# Ray's own variables that would point a process at another cluster, token or mode.
RAY_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_TMPDIR")
PORT_NAMES = (
    "port",
    "ray-client-server-port",
    "node-manager-port",
    "object-manager-port",
    "dashboard-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
)
WORKER_PORTS = 24  # the workers' range, after the named ports


def free_block(size: int, first: int = 26000, last: int = 26999) -> int:
    """The first port of `size` consecutive ports in [first, last] that nothing listens on."""
    for base in range(first, last - size + 2, 100):
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {size} free ports in {first}-{last}")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Ray's addressing and auth variables, with realign's
    sources first on the path (the cluster's workers import them too)."""
    env = {k: v for k, v in os.environ.items() if k not in RAY_VARS}
    path = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return {**env, **extra}


@dataclass
class Cluster:
    mode: str  # "token" or "disabled": what `ray start` ran with
    home: Path  # HOME of `ray start` (its ~/.ray/auth_token)
    ray_tmp: Path  # RAY_TMPDIR of the cluster and of the drivers that join it by `auto`
    client_port: int
    log: Path

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def token(self) -> str:
        return (self.home / ".ray" / "auth_token").read_text()

    def errors(self) -> str:
        """The end of the cluster's Ray Client server logs and of its other non-empty `.err`
        logs: what a failed run's message shows besides the driver's own stderr."""
        logs = sorted(
            (p for p in self.ray_tmp.glob("ray/session_latest/logs/*.err") if p.stat().st_size),
            key=lambda p: not p.name.startswith("ray_client_server"),
        )
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in logs)


def own_processes(ray_tmp: Path, pgid: int) -> list[str]:
    """Processes of one cluster still alive: its process group, or a command line naming its
    folder (every Ray process names its session folder). Read from /proc: no psutil here."""
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (proc / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # `pid (name) state ppid pgrp …`: the name may hold spaces, so split after its `)`.
        state, _, group = stat.rsplit(")", 1)[1].split()[:3]
        if state != "Z" and (int(group) == pgid or str(ray_tmp) in cmd):
            left.append(f"{proc.name}: {cmd[:160]}")
    return left


def stop_group(pgid: int, ray_tmp: Path) -> list[str]:
    """`ray stop` for this cluster only: SIGTERM to its process group, SIGKILL to whatever is
    left after a grace period; returns the processes that survived even that."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return own_processes(ray_tmp, pgid)
        deadline = time.monotonic() + grace
        while own_processes(ray_tmp, pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
    return own_processes(ray_tmp, pgid)


def wait_ready(proc: subprocess.Popen[bytes], cluster: Cluster) -> None:
    """Until `ray start` has written the cluster's address (it exits once the node is up) and
    the Ray Client server answers connections."""
    import grpc

    address_file = cluster.ray_tmp / "ray" / "ray_current_cluster"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not address_file.exists() or proc.poll() is None:
        if proc.poll() not in (None, 0) or time.monotonic() > deadline:
            raise RuntimeError(f"`ray start` failed ({proc.poll()}):\n{cluster.log.read_text()}")
        time.sleep(0.2)
    with grpc.insecure_channel(cluster.client_address.removeprefix("ray://")) as channel:
        grpc.channel_ready_future(channel).result(timeout=max(1.0, deadline - time.monotonic()))


@pytest.fixture(scope="module", params=["disabled", "token"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One `ray start --head` per mode; pytest runs the tests of one before starting the next.
    Token mode as the README says: `ray get-auth-token --generate` (it writes
    `~/.ray/auth_token`), then `RAY_AUTH_MODE=token ray start --head`."""
    mode = request.param
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths
    home, ray_tmp = root / "home", root / "t"
    home.mkdir()
    ray_tmp.mkdir()
    base = free_block(len(PORT_NAMES) + WORKER_PORTS)
    ports = dict(zip(PORT_NAMES, range(base, base + len(PORT_NAMES)), strict=True))
    first_worker = base + len(PORT_NAMES)
    extra = {"HOME": str(home), "RAY_TMPDIR": str(ray_tmp), "REALIGN_HOME": str(root / "rh")}
    argv = [
        str(RAY_CLI), "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
        "--include-dashboard", "false", "--disable-usage-stats",
        *[a for name, port in ports.items() for a in (f"--{name}", str(port))],
        "--min-worker-port", str(first_worker),
        "--max-worker-port", str(first_worker + WORKER_PORTS - 1),
    ]  # fmt: skip
    c = Cluster(mode, home, ray_tmp, ports["ray-client-server-port"], root / "ray-start.log")
    proc = None
    try:
        if mode == "token":  # the token first: `ray start` in token mode does not make one
            gen = [str(RAY_CLI), "get-auth-token", "--generate"]
            subprocess.run(gen, env=clean_env(**extra), capture_output=True, check=True, timeout=60)
            assert (home / ".ray" / "auth_token").is_file()
            extra["RAY_AUTH_MODE"] = "token"
        with c.log.open("wb") as log:
            # Its own session: the Ray processes it leaves running stay in its process group.
            proc = subprocess.Popen(
                argv, env=clean_env(**extra), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_ready(proc, c)
        yield c
    finally:
        survivors: list[str] = []
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            survivors = stop_group(proc.pid, ray_tmp)
        shutil.rmtree(root, ignore_errors=True)
        assert survivors == [], f"Ray processes of the test cluster left running: {survivors}"


def test_the_probes_name_the_clusters_mode(cluster: Cluster) -> None:
    """What realign asks before connecting, without a token: the GCS (`auto`, `HOST:PORT`) and
    the Ray Client server (`ray://`) both answer with the mode `ray start` ran in."""
    from realign.distributed.auth import client_auth_mode, cluster_auth_mode

    gcs = (cluster.ray_tmp / "ray" / "ray_current_cluster").read_text().strip()
    assert cluster_auth_mode(gcs) == cluster.mode
    assert client_auth_mode(cluster.client_address.removeprefix("ray://")) == cluster.mode
    assert client_auth_mode("127.0.0.1:1", timeout=2) is None  # nothing listens there


# ----------------------------------------------------------------- the runs


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The input (one unreadable line among the records) and a pack that rewrites the type
    the fake classifier answers (`default`)."""
    folder = tmp_path_factory.mktemp("work")
    lines = alpaca(N)
    lines.insert(7, "{not json")
    (folder / "in.jsonl").write_text("\n".join(lines) + "\n")
    types = {**TYPES, "default": ("Anything that fits no other type.", "yes", "no", "Answer.")}
    write_pack(folder / "pack", types)
    return folder


def realign_run(
    work: Path, name: str, *extra: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "realign.cli.main", "run", str(work / "in.jsonl"),
        "-o", str(work / f"{name}.jsonl"), "--backend", "fake", "--pack", str(work / "pack"),
        "--force", *extra,
    ]  # fmt: skip
    # Its own realign home: its own cache, so every run does the work.
    env = {**env, "REALIGN_HOME": str(work / f"home-{name}")}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def run_files(work: Path, name: str) -> tuple[str, str]:
    """The output and failures file of a run, with provenance time and command line blanked:
    the fields two runs of the same input under different flags do not share."""
    out = (work / f"{name}.jsonl").read_text()
    failures = work / f"{name}.failures.jsonl"
    return without_time(out), failures.read_text() if failures.exists() else ""


@pytest.fixture(scope="module")
def local(work: Path) -> tuple[str, str]:
    """What the local engine writes for the input: the reference every cluster run matches."""
    res = realign_run(work, "local", env=clean_env(HOME=str(work / "home-user")))
    assert res.returncode == 1, res.stderr[-3000:]  # the unreadable line
    files = run_files(work, "local")
    records = [json.loads(x) for x in files[0].splitlines()]
    assert [r["id"] for r in records] == [f"r{i}" for i in range(N)]
    assert {r["realign"]["status"] for r in records} == {"rewritten"}
    assert len(files[1].splitlines()) == 1
    return files


def driver_env(cluster: Cluster, home: Path, **extra: str) -> dict[str, str]:
    """A user's shell on the cluster's machine: RAY_AUTH_MODE unset unless `extra` sets it."""
    home.mkdir(parents=True, exist_ok=True)
    return clean_env(HOME=str(home), RAY_TMPDIR=str(cluster.ray_tmp), **extra)


def assert_same_as_local(
    res: subprocess.CompletedProcess[str],
    work: Path,
    name: str,
    local: tuple[str, str],
    cluster: Cluster,
) -> None:
    why = f"exit {res.returncode}\n{res.stderr[-4000:]}\n{cluster.errors()}"
    assert res.returncode == 1 and (work / f"{name}.jsonl").exists(), why
    got = run_files(work, name)
    ids = [json.loads(x)["id"] for x in got[0].splitlines()]
    assert ids == [f"r{i}" for i in range(N)], res.stderr[-2000:]
    assert got == local


def test_auto_joins_the_cluster_ray_start_made(
    cluster: Cluster, work: Path, local: tuple[str, str]
) -> None:
    """`--address auto`, RAY_AUTH_MODE unset. Without authentication: a user who never made a
    token. With it: the user who started the cluster, whose ~/.ray/auth_token `ray start`
    used (realign takes token mode from the cluster's answer and Ray finds the token)."""
    home = cluster.home if cluster.mode == "token" else cluster.home.parent / "user"
    name = f"auto-{cluster.mode}"
    res = realign_run(work, name, "--engine", "ray", "--workers", "2", "--address", "auto",
                      env=driver_env(cluster, home))  # fmt: skip
    assert_same_as_local(res, work, name, local, cluster)


@pytest.mark.parametrize("cluster", ["disabled"], indirect=True)
def test_auto_with_a_leftover_token_joins_a_cluster_without_authentication(
    cluster: Cluster, work: Path, local: tuple[str, str]
) -> None:
    """The failure users met: a local run once wrote ~/.ray/auth_token, so Ray's driver guesses
    token mode for `auto`, and against a cluster without authentication its actors die at
    start. realign asks the cluster and runs without a token."""
    home = cluster.home.parent / "user-with-token"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))  # not the cluster's
    name = "auto-leftover-token"
    res = realign_run(work, name, "--engine", "ray", "--workers", "2", "--address", "auto",
                      env=driver_env(cluster, home))  # fmt: skip
    assert_same_as_local(res, work, name, local, cluster)


def test_ray_client_reaches_the_cluster(
    cluster: Cluster, work: Path, local: tuple[str, str]
) -> None:
    """`--address ray://127.0.0.1:PORT`, RAY_AUTH_MODE unset, from a home that is not the
    cluster's (as on another machine). Token cluster: the user copied the cluster's token and
    names it with RAY_AUTH_TOKEN_PATH. No authentication: the home holds a leftover token of
    its own, which must not make the driver speak token mode."""
    home = cluster.home.parent / "client"
    extra = {}
    if cluster.mode == "token":
        copy = cluster.home.parent / "copied_token"
        copy.write_text(cluster.token())
        extra["RAY_AUTH_TOKEN_PATH"] = str(copy)
    else:
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = driver_env(cluster, home, **extra)
    env.pop("RAY_TMPDIR")  # Ray Client finds nothing on this machine: the address says it all
    name = f"client-{cluster.mode}"
    res = realign_run(work, name, "--engine", "ray", "--workers", "2",
                      "--address", cluster.client_address, env=env)  # fmt: skip
    assert_same_as_local(res, work, name, local, cluster)


@pytest.mark.parametrize("cluster", ["token"], indirect=True)
@pytest.mark.parametrize("token", ["none", "another"])
def test_a_driver_without_the_clusters_token_is_told_where_it_goes(
    cluster: Cluster, work: Path, token: str
) -> None:
    """A token cluster joined from a home that holds no token, or a token of another cluster:
    one `error:` line naming the address and where the token goes, exit 2, no traceback."""
    home = cluster.home.parent / f"token-{token}"
    if token == "another":
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = driver_env(cluster, home)
    # Ray tries a refused GCS for ~20 s (one try a second): 2 tell the same story.
    env["RAY_gcs_server_port_wait_time_s"] = "2"
    res = realign_run(work, f"token-{token}", "--engine", "ray", "--address", "auto", env=env)
    text = res.stdout + res.stderr
    assert res.returncode == 2, text[-3000:]
    assert "error: --address auto: could not join the Ray cluster" in text, text[-3000:]
    assert "RAY_AUTH_TOKEN" in text and "Traceback" not in text, text[-3000:]


# ------------------------------------------------------- without a cluster


class FlakyRay:
    """`ray` whose `init` fails as Ray Client's proxy does when the server it forks for the
    session dies (ray-project/ray#63202), `fails` times, then connects."""

    def __init__(self, fails: int) -> None:
        import ray

        self.exceptions = ray.exceptions
        self.fails, self.calls = fails, 0

    def is_initialized(self) -> bool:
        return False

    def init(self, address: str, **kwargs: object) -> None:
        self.calls += 1
        if self.calls <= self.fails:
            raise ConnectionAbortedError(
                "Initialization failure from server:\nTraceback (most recent call last):\n"
                '  File "proxier.py", line 772, in Datapath\n'
                "RuntimeError: Starting Ray client server failed.\n"
            )


@pytest.mark.parametrize(
    ("address", "fails", "calls", "joins"),
    [
        ("ray://head:10001", 2, 3, True),  # the third try starts a server that lives
        ("ray://head:10001", 3, 3, False),  # then it gives up, with one error line
        ("10.0.0.1:6379", 1, 1, False),  # not Ray Client: nothing to retry
    ],
)
def test_ray_client_tries_again_when_its_server_dies_at_start(
    monkeypatch: pytest.MonkeyPatch, address: str, fails: int, calls: int, joins: bool
) -> None:
    from realign.distributed import run
    from realign.errors import UsageError

    flaky = FlakyRay(fails)
    monkeypatch.setattr(run, "require_ray", lambda: flaky)
    monkeypatch.setattr(run, "match_cluster_auth", lambda address: None)
    # No token mode: an earlier test's Ray session in this process may have left it set, and
    # the error line then adds where the token goes.
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    if joins:
        assert run.init_ray(address, 2) is flaky
    else:
        with pytest.raises(UsageError, match=f"^--address {address}: could not join") as e:
            run.init_ray(address, 2)
        # One line: the server's traceback reduced to what failed.
        assert str(e.value).endswith(
            "Initialization failure from server: RuntimeError: Starting Ray client server failed."
        )
    assert flaky.calls == calls
