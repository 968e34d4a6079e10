"""A fake Hugging Face Hub on 127.0.0.1 for publishing tests (no network).

It implements what huggingface_hub 2.4's `create_repo` + `create_commit` call:
  GET  /api/whoami-v2                      (the studio's own fail-fast token check)
  POST /api/repos/create
  POST /api/validate-yaml                  (README.md front matter)
  POST /api/models/<ns>/<name>/preupload/main   -> every file "regular", so no LFS/xet upload
  POST /api/models/<ns>/<name>/commit/main      NDJSON, regular files inline as base64
`fail={path fragment: (status, body)}` answers those requests with an error that echoes the
request's Authorization header back, as a hostile or careless server might.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self, fail: dict[str, tuple[int, dict]] | None = None, role: str = "write"):
        self.fail = fail or {}      # path fragment -> (status, JSON body) to answer instead
        self.role = role
        self.requests: list[tuple[str, str, dict]] = []   # (method, path, headers)
        self.repos: dict[str, dict] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep stderr quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                hub.requests.append((method, path, {k.lower(): v for k, v in self.headers.items()}))
                for fragment, (status, answer) in hub.fail.items():
                    if fragment in path:
                        # A hostile server echoes the credentials back in its error.
                        answer = {**answer, "error": f"{answer.get('error', '')} {self.headers.get('Authorization')}"}
                        return self._send(status, answer)
                if path == "/api/whoami-v2":
                    return self._send(200, {"name": "alice", "auth": {"accessToken": {"role": hub.role}}})
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo = f"{req.get('organization') or 'alice'}/{req['name']}"
                    hub.repos[repo] = req
                    return self._send(200, {"url": f"http://{self.headers['Host']}/{repo}"})
                if path == "/api/validate-yaml":
                    return self._send(200, {"errors": [], "warnings": []})
                parts = path.split("/")   # ['', 'api', 'models', ns, name, op, revision]
                if len(parts) == 7 and parts[2] == "models" and parts[5] == "preupload":
                    files = json.loads(body)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                if len(parts) == 7 and parts[2] == "models" and parts[5] == "commit":
                    repo = f"{parts[3]}/{parts[4]}"
                    store = hub.files.setdefault(repo, {})
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            store[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        elif item["key"] != "header":
                            return self._send(400, {"error": f"unexpected commit item {item['key']}"})
                    return self._send(200, {"commitUrl": f"http://{self.headers['Host']}/{repo}/commit/abc",
                                            "commitOid": "a" * 40})
                return self._send(404, {"error": f"fake hub has no {method} {path}"})

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
