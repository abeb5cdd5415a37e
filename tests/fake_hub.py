"""A minimal stand-in for the Hugging Face Hub's HTTP API, enough for `realign push` through
huggingface_hub 2.4: the calls `repo_exists`, `list_repo_files`, `create_repo`,
`update_repo_settings` and `create_commit` (with regular, base64-inlined files) make.

What it answers was read from huggingface_hub's source (`hf_api.py`, `_commit_api.py`):
- GET  /api/datasets/ORG/NAME[/revision/REV]  repo info, or 404 with `X-Error-Code: RepoNotFound`
- GET  /api/datasets/ORG/NAME/tree/REV         the file list (one page, no `Link` header)
- POST /api/repos/create                       {name, organization, type, visibility}; 409 if taken
- PUT  /api/datasets/ORG/NAME/settings         {visibility}
- POST /api/validate-yaml                      a README's YAML header (always accepted here)
- POST /api/datasets/ORG/NAME/preupload/REV    every file `regular` (the real Hub says `lfs` for
                                               Parquet; LFS/Xet uploads are not faked)
- POST /api/datasets/ORG/NAME/commit/REV       NDJSON: header, file (base64), deletedFile
Every request must carry `Authorization: Bearer <token>`."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

REPO = r"(?P<repo>[^/]+/[^/]+)"


@dataclass
class FakeRepo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: int = 0


@dataclass
class HubState:
    token: str
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    fail_commit: bool = False  # answer the commit with a 500


def handler_for(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _not_found(self) -> None:
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

        def _route(self, method: str) -> None:
            path = self.path.split("?")[0]
            state.requests.append((method, path))
            body = self._body() if method in ("POST", "PUT") else b""
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                return self._send(401, {"error": "Invalid credentials in Authorization header"})
            if method == "POST" and path == "/api/validate-yaml":
                return self._send(200, {})
            if method == "POST" and path == "/api/repos/create":
                p = json.loads(body)
                repo_id = f"{p['organization']}/{p['name']}"
                if repo_id in state.repos:
                    return self._send(409, {"error": "You already created this dataset repo"})
                state.repos[repo_id] = FakeRepo(private=p.get("visibility") == "private")
                host = self.headers.get("Host")
                return self._send(200, {"url": f"http://{host}/datasets/{repo_id}"})
            m = re.fullmatch(rf"/api/datasets/{REPO}(?P<rest>/.*)?", path)
            if not m or m["repo"] not in state.repos:
                return self._not_found()
            repo = state.repos[m["repo"]]
            rest = m["rest"] or ""
            if method == "GET" and (rest == "" or rest.startswith("/revision/")):
                files = [{"rfilename": f} for f in sorted(repo.files)]
                sha = f"{repo.commits:040d}"
                return self._send(
                    200, {"id": m["repo"], "sha": sha, "private": repo.private, "siblings": files}
                )
            if method == "GET" and rest.startswith("/tree/"):
                return self._send(
                    200,
                    [
                        {"type": "file", "path": f, "size": len(b), "oid": "0" * 40}
                        for f, b in sorted(repo.files.items())
                    ],
                )
            if method == "PUT" and rest == "/settings":
                repo.private = json.loads(body).get("visibility") == "private"
                return self._send(200, {})
            if method == "POST" and rest.startswith("/preupload/"):
                files = json.loads(body)["files"]
                return self._send(
                    200,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                            for f in files
                        ]
                    },
                )
            if method == "POST" and rest.startswith("/commit/"):
                if state.fail_commit:
                    return self._send(500, {"error": "internal error"})
                lines = [json.loads(x) for x in body.splitlines() if x.strip()]
                for item in lines:
                    v = item["value"]
                    if item["key"] == "file":
                        repo.files[v["path"]] = base64.b64decode(v["content"])
                    elif item["key"] == "deletedFile":
                        repo.files.pop(v["path"])
                    elif item["key"] != "header":
                        return self._send(400, {"error": f"not faked: {item['key']}"})
                repo.commits += 1
                host = self.headers.get("Host")
                return self._send(
                    200,
                    {
                        "commitUrl": f"http://{host}/datasets/{m['repo']}/commit/{repo.commits}",
                        "commitOid": f"{repo.commits:040d}",
                    },
                )
            return self._send(404, {"error": f"not faked: {method} {path}"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

    return Hub
