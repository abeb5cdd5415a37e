"""Ray's token authentication (Ray 2.60): the driver speaks the cluster's mode.

Ray reads the mode from `RAY_AUTH_MODE` (`token` / `disabled`) and the token from
`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`. When the variable is unset, a
driver joining `auto` turns token mode on whenever a token file exists (a local `ray.init()`
writes one), and a driver given an explicit `HOST:PORT` never does. So a driver and a cluster
can disagree, and both ways fail at start (checked with `ray start --head`): a token-mode driver
against a cluster without authentication sees its actors die during initialization; a driver
without token mode against a token cluster gets `InvalidAuthToken` from the GCS.

When `RAY_AUTH_MODE` is unset, `match_cluster_auth` asks the cluster's GCS one question without
a token before connecting: a token cluster refuses it (`UNAUTHENTICATED`), any other answers.
The driver then takes that mode. A `RAY_AUTH_MODE` the user set always wins. Ray Client
(`ray://`) is left to Ray: the client server runs on the cluster, in the cluster's mode.
"""

from __future__ import annotations

import os

AUTH_MODE = "RAY_AUTH_MODE"
PROBE_TIMEOUT_S = 5.0


def cluster_auth_mode(gcs_address: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """`token` if the GCS at `gcs_address` (`host:port`) refuses a call without a token,
    `disabled` if it answers, None if it cannot be reached (Ray's own error will say why)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(gcs_address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
            stub.GetClusterId(request, timeout=timeout)
        except grpc.RpcError as e:
            return "token" if e.code() == grpc.StatusCode.UNAUTHENTICATED else None
    return "disabled"


def match_cluster_auth(address: str | None) -> str | None:
    """Set this process's `RAY_AUTH_MODE` to the cluster's at `address` when the user has not;
    returns the mode set (None: nothing to do or nothing learnt)."""
    if not address or address.startswith("ray://") or os.environ.get(AUTH_MODE):
        return None
    from ray._private.services import canonicalize_bootstrap_address
    from ray._raylet import Config  # type: ignore[attr-defined]

    try:
        gcs = canonicalize_bootstrap_address(address)
    except (ValueError, ConnectionError):
        return None  # no cluster there: ray.init says so
    mode = cluster_auth_mode(gcs) if gcs else None
    if mode is not None:
        os.environ[AUTH_MODE] = mode
        Config.initialize("")  # Ray caches its config: make it read the mode again
    return mode
