"""Re-record HTTP cassettes against the real llama.cpp server running SmolLM2-135M.

Starts llama-cpp-python's OpenAI-compatible server (the same way `realign` does for the
embedded model) on the fixed address http://127.0.0.1:8765/v1 that cassette tests point at,
runs pytest with `--record-mode=rewrite` on the given tests, then stops the server.

    .venv/bin/python scripts/record_cassettes.py                     # tests/test_backends.py
    .venv/bin/python scripts/record_cassettes.py tests/test_x.py -k cassette
    .venv/bin/python scripts/record_cassettes.py --port 8766 tests/test_y.py

Needs `pip install 'realign[local]'`. Authorization headers are filtered by the `vcr_config`
fixture in tests/conftest.py; see cassettes/README.md.
"""

from __future__ import annotations

import subprocess
import sys
import time

from realign.llm.local import LlamaServer, find_local_model

PORT = 8765
DEFAULT_ARGS = ["tests/test_backends.py", "-k", "cassette"]


def main(argv: list[str]) -> int:
    port = PORT
    if argv[:1] == ["--port"]:
        port, argv = int(argv[1]), argv[2:]
    args = argv or DEFAULT_ARGS
    server = LlamaServer(find_local_model(), port=port)
    print(f"starting llama.cpp on {server.base_url} …", file=sys.stderr)
    with server:
        print(f"ready in {server.start_seconds:.1f}s; recording", file=sys.stderr)
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "pytest", *args, "--record-mode=rewrite"]
        code = subprocess.call(cmd)
        print(f"pytest exited {code} after {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
