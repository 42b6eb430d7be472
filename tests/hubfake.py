"""A local stand-in for the Hugging Face Hub, on 127.0.0.1: plain files and model repos.

:class:`Server` serves bytes by path (``files``), with Range support, and misbehaves on
request (a status, a dropped or short body, a throttle). It also keeps model repos as the Hub
does, answering the requests ``huggingface_hub`` makes, so uploads and downloads go through
the real client:

* ``POST /api/repos/create``; ``POST /api/validate-yaml`` (the card's front matter);
* ``POST /api/models/ORG/NAME/preupload/REV`` (``*.safetensors`` and ``*.onnx`` go by LFS);
* ``POST /ORG/NAME.git/info/lfs/objects/batch`` and ``PUT /lfs-upload/OID`` (single part);
* ``POST /api/models/ORG/NAME/commit/REV`` (NDJSON: header, file, lfsFile, deletedFile);
* ``HEAD``/``GET /ORG/NAME/resolve/REV/PATH`` for a branch or a commit id, with the Hub's
  headers (``X-Repo-Commit``, ``ETag``: the SHA-256 of an LFS file, else its git blob id).

Writes need ``Authorization: Bearer <token>``; so do reads of a private repo (401 with
``X-Error-Code: RepoNotFound`` otherwise, as the Hub answers). ``tamper[(repo, path)]``
serves other bytes under the right ETag: the client's own checks pass, only smokerdet's
manifest can catch it.

The ``hub_online`` fixture points the Hub client at the server, online, with no stored token
(``HF_TOKEN`` unset, the token file in a temp folder), Xet off (uploads go by LFS, which the
server speaks) and no backoff sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

TOKEN = "hf_test_write_token"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """A model repo: its commits (each a whole tree), its branches, whether it is private."""

    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)  # paths stored by LFS

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class Server:
    """Serves bytes by path and model repos, and can misbehave on request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.drop_first: set[str] = set()  # send half, then close, on the first GET
        self.throttle: float = 0.0  # seconds per 16 KiB chunk
        self.ignore_range: set[str] = set()  # answer 200 with the whole body to a Range request
        self.short: dict[str, int] = {}  # path -> how many GETs send half the Content-Length
        self.headers: dict[str, dict[str, str]] = {}  # path -> extra headers (Hub metadata)
        self.requests: list[tuple[str, str, str | None]] = []
        self.repos: dict[str, Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.tamper: dict[tuple[str, str], bytes] = {}
        self.token = TOKEN
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- the Hub's API -------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        return header == f"Bearer {self.token}"

    def create_repo(self, body: dict) -> tuple[int, dict]:
        repo_id = f"{body['organization']}/{body['name']}"
        if repo_id in self.repos:
            return 409, {
                "error": "You already created this model repo",
                "url": self.url("/" + repo_id),
            }
        self.repos[repo_id] = Repo(private=body.get("visibility") == "private")
        return 200, {"url": self.url("/" + repo_id)}

    def preupload(self, body: dict) -> dict:
        files = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if f["path"].endswith((".safetensors", ".onnx")) else "regular",
                "shouldIgnore": False,
                "oid": None,
            }
            for f in body["files"]
        ]
        return {"files": files}

    def lfs_batch(self, body: dict) -> dict:
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs_store:
                entry["actions"] = {"upload": {"href": self.url(f"/lfs-upload/{obj['oid']}")}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def commit(self, repo_id: str, revision: str, lines: list[dict]) -> tuple[int, dict]:
        repo = self.repos[repo_id]
        parent = repo.refs.get(revision)
        tree = dict(repo.commits.get(parent, {})) if parent else {}
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                tree[value["path"]] = base64.b64decode(value["content"])
                repo.lfs.discard(value["path"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs_store:
                    return 400, {"error": f"LFS object {value['oid']} was never uploaded"}
                tree[value["path"]] = self.lfs_store[value["oid"]]
                repo.lfs.add(value["path"])
            elif line["key"] == "deletedFile":
                tree.pop(value["path"], None)
        listing = json.dumps({p: git_blob_id(b) for p, b in sorted(tree.items())})
        sha = hashlib.sha1(f"{parent}\n{listing}\n{len(repo.commits)}".encode()).hexdigest()
        repo.commits[sha] = tree
        repo.refs[revision] = sha
        url = self.url(f"/{repo_id}/commit/{sha}")
        return 200, {"commitUrl": url, "commitOid": sha, "success": True}

    def resolve(
        self, repo_id: str, revision: str, path: str, auth: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self.authorized(auth)):
            return 401 if repo else 404, {"X-Error-Code": "RepoNotFound"}, b""
        commit = repo.resolve(revision)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, b""
        tree = repo.commits[commit]
        if path not in tree:
            return 404, {"X-Error-Code": "EntryNotFound"}, b""
        body = self.tamper.get((repo_id, path), tree[path])
        etag = (
            hashlib.sha256(tree[path]).hexdigest() if path in repo.lfs else git_blob_id(tree[path])
        )
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{etag}"'}, body


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(
            self, status: int, headers: dict[str, str], body: bytes, head: bool = False
        ) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, {"Content-Type": "application/json"}, json.dumps(obj).encode())

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _repo_file(self, head: bool) -> bool:
            """A request for ``/ORG/NAME/resolve/REV/PATH`` of a repo the server keeps."""
            parts = urlsplit(self.path).path.split("/")
            if len(parts) < 6 or parts[3] != "resolve":
                return False
            repo_id = f"{parts[1]}/{parts[2]}"
            if repo_id not in server.repos:
                if any(p.startswith(f"/{repo_id}/") for p in (*server.files, *server.status)):
                    return False  # plain files stand for this repo (timm's weights)
                self._send(404, {"X-Error-Code": "RepoNotFound"}, b"", head)
                return True
            revision, path = unquote(parts[4]), unquote("/".join(parts[5:]))
            status, headers, body = server.resolve(
                repo_id, revision, path, self.headers.get("Authorization")
            )
            self._send(status, headers, body, head)
            return True

        def do_HEAD(self) -> None:  # noqa: N802
            server.requests.append(("HEAD", self.path, None))
            if self._repo_file(head=True):
                return
            body = server.files.get(self.path)
            status = server.status.get(self.path, 404 if body is None else 200)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if body is not None else 0))
            for k, v in server.headers.get(self.path, {}).items():
                self.send_header(k, v)
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            rng = self.headers.get("Range")
            server.requests.append(("GET", self.path, rng))
            if self._repo_file(head=False):
                return
            if self.path in server.status:
                self._send(server.status[self.path], {}, b"")
                return
            if self.path in server.ignore_range:
                rng = None
            body = server.files.get(self.path)
            if body is None:
                self._send(404, {}, b"")
                return
            start = 0
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(body):
                    self._send(416, {}, b"")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if server.short.get(self.path, 0) > 0:
                server.short[self.path] -= 1
                self._cut(payload)
                return
            if self.path in server.drop_first and not rng:
                server.drop_first.discard(self.path)
                self._cut(payload)
                return
            for i in range(0, len(payload), 16384):
                try:
                    self.wfile.write(payload[i : i + 16384])
                except (BrokenPipeError, ConnectionResetError):
                    return
                if server.throttle:
                    time.sleep(server.throttle)

        def _cut(self, payload: bytes) -> None:
            """Half the body, then the connection closes."""
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)

        def do_POST(self) -> None:  # noqa: N802
            server.requests.append(("POST", self.path, None))
            body = self._body()
            path = urlsplit(self.path).path
            if path == "/api/validate-yaml":
                self._json(200, {"errors": [], "warnings": []})
                return
            if not server.authorized(self.headers.get("Authorization")):
                self._send(401, {"X-Error-Code": "RepoNotFound"}, b"")
                return
            parts = path.split("/")
            with server.lock:
                if path == "/api/repos/create":
                    self._json(*server.create_repo(json.loads(body)))
                elif path.endswith(".git/info/lfs/objects/batch"):
                    self._json(200, server.lfs_batch(json.loads(body)))
                elif (
                    len(parts) == 7 and parts[1:3] == ["api", "models"] and parts[5] == "preupload"
                ):
                    self._json(200, server.preupload(json.loads(body)))
                elif len(parts) == 7 and parts[1:3] == ["api", "models"] and parts[5] == "commit":
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    repo_id = f"{parts[3]}/{parts[4]}"
                    if repo_id not in server.repos:
                        self._send(404, {"X-Error-Code": "RepoNotFound"}, b"")
                        return
                    self._json(*server.commit(repo_id, unquote(parts[6]), lines))
                else:
                    self._send(404, {}, b"")

        def do_PUT(self) -> None:  # noqa: N802
            server.requests.append(("PUT", self.path, None))
            body = self._body()
            oid = urlsplit(self.path).path.removeprefix("/lfs-upload/")
            if hashlib.sha256(body).hexdigest() != oid:
                self._send(400, {}, b"")
                return
            with server.lock:
                server.lfs_store[oid] = body
            self._send(200, {}, b"")

    return Handler


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def hub_online(server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Server:
    """The Hub client pointed at ``server``, online, with no token of its own."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", server.url(""))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # The Hub read HF_HUB_OFFLINE=1 (conftest) when timm first imported it: clear its copy too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # No token but the one a test sets: not the developer's stored one, nor one in the env.
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
    # Uploads by LFS, which the server speaks, not by Xet (hf_xet is installed).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    # Online, the Hub client also fetches an "agent harness" registry from its import-time
    # endpoint once a day, to build its User-Agent: give it an empty one, so nothing leaves.
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
    monkeypatch.setattr(time, "sleep", lambda s: None)  # the Hub's own backoff between retries
    return server
