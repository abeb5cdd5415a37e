"""Ray's token authentication (Ray 2.60): the driver speaks the cluster's mode.

Ray reads the mode from `RAY_AUTH_MODE` (`token` / `disabled`) and the token from
`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`. When the variable is unset, a
driver joining `auto` turns token mode on whenever a token file exists (a local `ray.init()`
writes one), and a driver given an explicit `HOST:PORT` or `ray://` address never does. So a
driver and a cluster can disagree, and every way fails at start (checked with `ray start
--head`): a token-mode driver against a cluster without authentication sees its actors die
during initialization; a driver without token mode against a token cluster gets
`InvalidAuthToken` from the GCS, or, through Ray Client, `ray client connection timeout` after
30 s of retries.

When `RAY_AUTH_MODE` is unset, `match_cluster_auth` asks the cluster one question without a
token before connecting: the GCS (`auto`, `HOST:PORT`) or the Ray Client server (`ray://`),
whose cheapest call is the ping a client sends first. A token cluster refuses it
(`UNAUTHENTICATED`), any other answers. The driver then takes that mode. A `RAY_AUTH_MODE` the
user set always wins.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

AUTH_MODE = "RAY_AUTH_MODE"
CLIENT_SCHEME = "ray://"
PROBE_TIMEOUT_S = 5.0


def _probe(target: str, call: Callable[[Any, float], object], timeout: float) -> str | None:
    """`token` if the gRPC server at `target` refuses `call(channel, timeout)` made without a
    token, `disabled` if it answers, None if it cannot be reached (Ray's own error says why)."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        try:
            call(channel, timeout)
        except grpc.RpcError as e:
            return "token" if e.code() == grpc.StatusCode.UNAUTHENTICATED else None
    return "disabled"


def cluster_auth_mode(gcs_address: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """The token mode of the GCS at `gcs_address` (`host:port`), None if unreachable."""
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    def ask(channel: Any, timeout: float) -> object:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
        return stub.GetClusterId(request, timeout=timeout)

    return _probe(gcs_address, ask, timeout)


def client_auth_mode(server: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """The token mode of the Ray Client server at `server` (`host:port`, what follows
    `ray://`), None if unreachable. The ping is answered by the server itself: it starts no
    session on the cluster."""
    from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

    def ask(channel: Any, timeout: float) -> object:
        stub = ray_client_pb2_grpc.RayletDriverStub(channel)
        pb: Any = ray_client_pb2  # generated code: no attributes mypy can see
        ping = pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING)
        return stub.ClusterInfo(ping, timeout=timeout)

    return _probe(server, ask, timeout)


def match_cluster_auth(address: str | None) -> str | None:
    """Set this process's `RAY_AUTH_MODE` to the cluster's at `address` when the user has not;
    returns the mode set (None: nothing to do or nothing learnt)."""
    if not address or os.environ.get(AUTH_MODE):
        return None
    if address.startswith(CLIENT_SCHEME):
        server = address.removeprefix(CLIENT_SCHEME).split("?", 1)[0].rstrip("/")
        mode = client_auth_mode(server) if server else None
    else:
        mode = _gcs_mode(address)
    if mode is not None:
        from ray._raylet import Config  # type: ignore[attr-defined]

        os.environ[AUTH_MODE] = mode
        Config.initialize("")  # Ray caches its config: make it read the mode again
    return mode


def join_error(address: str, error: Exception) -> str:
    """What a driver that could not join the cluster at `address` tells the user: Ray's reason
    and, in token mode, where the token comes from (Ray's own refusal of a token that is not
    the cluster's is a bare connection error or, through Ray Client, a timeout)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    # A server's traceback (Ray Client): its first line and its last, the exception, say it.
    why = " ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines) or type(error).__name__
    message = f"--address {address}: could not join the Ray cluster: {why}"
    if os.environ.get(AUTH_MODE) == "token" and "RAY_AUTH_TOKEN" not in why:
        message += (
            " (token authentication: this machine needs the cluster's token, in RAY_AUTH_TOKEN,"
            " a file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token)"
        )
    return message


def _gcs_mode(address: str) -> str | None:
    """The mode of the cluster `auto` or `HOST:PORT` names, found as `ray.init` finds it."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        gcs = canonicalize_bootstrap_address(address)
    except (ValueError, ConnectionError):
        return None  # no cluster there: ray.init says so
    return cluster_auth_mode(gcs) if gcs else None
