"""A Ray worker-process setup hook for `test_ray_nodes.py`: records which files each Ray worker
process opens and which connections it makes, so the test can tell what the processes of each
node did.

`install` runs in every worker process of the test's Ray job (`worker_process_setup_hook`):
it adds a Python audit hook (`sys.addaudithook`) that appends, to
`$NODE_AUDIT_DIR/<node id>-<pid>.log`, one line per
- `open <path>`: a file opened (built-in `open`, `os.open`) whose path ends in `.sqlite` or
  lies under `$NODE_AUDIT_WATCH`;
- `sqlite <path>`: a `sqlite3.connect`;
- `connect <port>`: a socket connection to port `$NODE_AUDIT_PORT` (the stub server).
"""

from __future__ import annotations

import os
import sys
from typing import Any


def install() -> None:
    import ray

    folder = os.environ["NODE_AUDIT_DIR"]
    watch = os.environ.get("NODE_AUDIT_WATCH", "\0")
    port = int(os.environ.get("NODE_AUDIT_PORT", "0"))
    node = ray.get_runtime_context().get_node_id()
    # Opened before the hook is added, and written with `os.write`: no audit events of its own.
    fd = os.open(
        os.path.join(folder, f"{node}-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND
    )

    def note(line: str) -> None:
        os.write(fd, (line + "\n").encode())

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path = args[0]
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if isinstance(path, str) and (path.startswith(watch) or path.endswith(".sqlite")):
                note(f"open {path}")
        elif event == "sqlite3.connect":
            note(f"sqlite {args[0]}")
        elif event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and len(address) >= 2 and address[1] == port:
                note(f"connect {port}")

    note("started")
    sys.addaudithook(hook)
