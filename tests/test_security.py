"""The studio as a hostile visitor sees it: the real `python app.py` on a loopback port.

Probes (HARDENING_NOTES §1, §4): raw path-traversal / absolute-path / URL requests to the
file route (sent with http.client, never normalised), the login covering every route,
upload caps, private event endpoints, the Train tab's handler with out-of-range values and
path strings, and a canary HF token that must never be written or shown anywhere.
Every request goes to 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from conftest import make_images, stop_worker

ROOT = Path(__file__).resolve().parent.parent
CANARY = "hf_CANARYcanary0123456789abcdefXYZ"
APP_MARKER = "train-start"  # an elem_id that only the real app page carries


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """One raw request: the path goes on the wire exactly as given (like curl --path-as-is)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in {"Host": f"127.0.0.1:{port}", **(headers or {})}.items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        # Streaming routes (heartbeats, SSE) never end: read a bounded prefix only.
        streaming = response.getheader("content-type", "").startswith("text/event-stream")
        data = response.read1(4096) if streaming else response.read()
        return response.status, dict(response.getheaders()), data
    finally:
        conn.close()


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class App:
    def __init__(self, name: str, root: Path, args: list[str] = (), env: dict | None = None):
        self.name, self.port = name, free_port()
        self.data = root / f"{name}-data"
        self.cwd = root / f"{name}-cwd"
        self.tmp = root / f"{name}-gradio-tmp"
        for folder in (self.data, self.cwd, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self.log_path = root / f"{name}.log"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                    "GRADIO_TEMP_DIR": str(self.tmp), "STUDIO_GRACE_SECONDS": "3", **(env or {})}
        for key in ("HF_TOKEN", "STUDIO_AUTH"):
            if env is None or key not in env:
                self.env.pop(key, None)
        self.args = [sys.executable, str(ROOT / "app.py"), "--port", str(self.port), "--data-dir", str(self.data),
                     *args]

    def start(self) -> None:
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: app.py exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if request(self.port, "GET", "/", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name}: no answer in {timeout} s")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        stop_worker(self.data)

    def get(self, path: str, **kw):
        return request(self.port, "GET", path, **kw)


def plant_files(app: App) -> dict[str, Path]:
    """What a live studio holds that must never be served, and a finished run that must be."""
    from studio.jobs import JobStore

    d = app.data
    store = JobStore(d)
    store.request_cancel(store.create_job("planted", {"save": {"run_name": "planted"}}))  # a row, never run
    files = {
        "db": d / "studio.db",
        "cache": d / "cache" / "text" / "abc.pt",
        "model": d / "models" / "demo" / "model_index.json",
        "checkpoint": d / "runs" / "1-done" / "checkpoints" / "step000002" / "lora.safetensors",
        "control": d / "runs" / "1-done" / "control" / "cancel",
        "env_data": d / ".env",
        "env_cwd": app.cwd / ".env",
        "worker_log": d / "worker.log",
        "sample": d / "runs" / "1-done" / "samples" / "step000002_p0.png",
        "lora": d / "runs" / "1-done" / "done-lora.safetensors",
    }
    for key, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            path.write_bytes(f"SECRET-{key}-{uuid.uuid4().hex}".encode() if key not in ("sample", "lora")
                             else f"PUBLIC-{key}".encode())
    (d / "worker.log").write_bytes(b"SECRET-worker_log")
    return files


class Canary(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        Canary.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"CANARY-CONTENT")

    do_HEAD = do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """Three studios started side by side: open (with worker and a canary HF_TOKEN in its
    environment), `--auth user:pass`, and STUDIO_AUTH from the environment."""
    root = tmp_path_factory.mktemp("sec")
    open_app = App("open", root, ["--max-upload-mb", "1"], env={"HF_TOKEN": CANARY})
    auth_app = App("auth", root, ["--auth", "alice:s3cret-pass", "--no-worker"])
    env_app = App("envauth", root, ["--no-worker"], env={"STUDIO_AUTH": "bob:env-pass"})
    for app in (open_app, auth_app, env_app):
        plant_files(app)
        app.start()
    try:
        for app in (open_app, auth_app, env_app):
            app.wait_ready()
        yield {"open": open_app, "auth": auth_app, "env": env_app}
    finally:
        for app in (open_app, auth_app, env_app):
            app.stop()


# --------------------------------------------------------------------------- 1. file route


def test_file_route_refuses_everything_but_run_outputs(apps):
    app = apps["open"]
    files = plant_files(app)
    canary_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Canary)
    threading.Thread(target=canary_server.serve_forever, daemon=True).start()
    canary_port = canary_server.server_address[1]
    Canary.hits.clear()

    # Upload a real file first so that we know the upload folder's real path.
    body, ctype = multipart([("hello.txt", b"hello")])
    status, _, data = request(app.port, "POST", "/gradio_api/upload", body, {"Content-Type": ctype})
    assert status == 200, data
    uploaded = Path(json.loads(data)[0])
    assert uploaded.is_relative_to(app.tmp)

    run = app.data / "runs" / "1-done"
    probes = {
        "upload/../../etc/passwd": f"{uploaded.parent}/../../../../../../../etc/passwd",
        "upload-dir/../etc/passwd": f"{app.tmp}/../../../../../../etc/passwd",
        "/etc/passwd": "/etc/passwd",
        "//etc/passwd": "//etc/passwd",
        "relative ../": "../../../../../../etc/passwd",
        "encoded ..": f"{app.data}/runs/%2e%2e/studio.db",
        "db": str(files["db"]),
        "db via runs/..": f"{run}/../../studio.db",
        "db-wal prefix": str(app.data / "studio.db-wal"),
        "cache": str(files["cache"]),
        "model": str(files["model"]),
        "checkpoint": str(files["checkpoint"]),
        "checkpoint via ./": f"{run}/./checkpoints/step000002/lora.safetensors",
        "checkpoint via //": f"{run}//checkpoints/step000002/lora.safetensors",
        "checkpoint via ..": f"{run}/samples/../checkpoints/step000002/lora.safetensors",
        "control": str(files["control"]),
        "worker.log": str(files["worker_log"]),
        ".env in data": str(files["env_data"]),
        ".env in cwd": str(files["env_cwd"]),
        ".env relative": ".env",
        "ssrf http": f"http://127.0.0.1:{canary_port}/",
        "ssrf http path": f"http://127.0.0.1:{canary_port}/x.png",
        "ssrf scheme-relative": f"//127.0.0.1:{canary_port}/x.png",
    }
    served = {}
    for what, target in probes.items():
        status, _, data = app.get("/gradio_api/file=" + target)
        served[what] = (status, data[:80])
        assert status in (400, 403, 404), (what, status, data[:200])
        assert b"SECRET" not in data and b"root:" not in data and b"CANARY-CONTENT" not in data, what
    assert Canary.hits == [], f"the studio fetched a URL for a visitor: {Canary.hits}"
    canary_server.shutdown()

    # Not vacuous: the finished run's sample and LoRA are served, byte for byte.
    for key in ("sample", "lora"):
        status, _, data = app.get("/gradio_api/file=" + str(files[key]))
        assert status == 200 and data == files[key].read_bytes(), (key, status)


def test_dataset_pictures_are_served_in_place_and_links_out_are_not(apps):
    """Dataset folders are served from where they lie (no copy per dataset pick); a link placed
    in one that points at the job store or outside the data folder is still refused."""
    app = apps["open"]
    thumbs = app.data / "datasets" / "linked" / ".thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    (thumbs / "ok.jpg").write_bytes(b"PUBLIC-thumb")
    for name, target in (("db.jpg", app.data / "studio.db"), ("passwd.jpg", Path("/etc/passwd")),
                         ("ckpt.jpg", app.data / "runs" / "1-done" / "checkpoints" / "step000002" / "lora.safetensors")):
        (thumbs / name).unlink(missing_ok=True)
        (thumbs / name).symlink_to(target)
        status, _, data = app.get("/gradio_api/file=" + str(thumbs / name))
        assert status in (400, 403, 404), (name, status)
        assert b"SECRET" not in data and b"root:" not in data, name
    status, _, data = app.get("/gradio_api/file=" + str(thumbs / "ok.jpg"))
    assert status == 200 and data == b"PUBLIC-thumb"


def test_checkpoints_of_a_run_created_after_launch_are_blocked(apps):
    app = apps["open"]
    run = app.data / "runs" / f"9-late-{uuid.uuid4().hex[:6]}"
    checkpoint = run / "checkpoints" / "step000001" / "state.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"SECRET-late-checkpoint")
    (run / "late.safetensors").write_bytes(b"PUBLIC-late")
    time.sleep(3.5)  # app.py refreshes the blocklist every 3 s
    status, _, data = app.get("/gradio_api/file=" + str(checkpoint))
    assert status in (403, 404) and b"SECRET" not in data, status
    assert app.get("/gradio_api/file=" + str(run / "late.safetensors"))[0] == 200


# --------------------------------------------------------------------------- 2. login


def _login(app: App, user: str, password: str) -> tuple[int, str]:
    body = urllib.parse.urlencode({"username": user, "password": password}).encode()
    status, headers, _ = request(app.port, "POST", "/login", body,
                                 {"Content-Type": "application/x-www-form-urlencoded"})
    cookie = "; ".join(v.split(";")[0] for k, v in headers.items() if k.lower() == "set-cookie")
    return status, cookie


def _protected_routes(app: App) -> list[tuple[str, str, bytes | None]]:
    sample = app.data / "runs" / "1-done" / "samples" / "step000002_p0.png"
    return [
        ("GET", "/config", None),
        ("GET", "/gradio_api/info", None),
        ("GET", "/gradio_api/file=" + str(sample), None),
        ("POST", "/gradio_api/queue/join", json.dumps({"data": [], "fn_index": 0, "session_hash": "x"}).encode()),
        ("POST", "/gradio_api/call/on_start", json.dumps({"data": []}).encode()),
        ("POST", "/gradio_api/run/predict", json.dumps({"data": [], "fn_index": 0}).encode()),
        ("GET", "/gradio_api/queue/data?session_hash=x", None),
        ("POST", "/gradio_api/upload", multipart([("a.png", b"x")])[0]),
    ]


@pytest.mark.parametrize("which, user, password", [("auth", "alice", "s3cret-pass"), ("env", "bob", "env-pass")])
def test_login_covers_every_route(apps, which, user, password):
    app = apps[which]
    sample_bytes = (app.data / "runs" / "1-done" / "samples" / "step000002_p0.png").read_bytes()
    # The page itself is only the login form: no app components, no config.
    status, _, page = app.get("/")
    assert APP_MARKER.encode() not in page and b"dataset-upload" not in page
    for method, path, body in _protected_routes(app):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status, _, data = request(app.port, method, path, body, headers, timeout=5)
        assert status in (401, 403) or 300 <= status < 400, (method, path, status, data[:200])
        assert sample_bytes not in data and APP_MARKER.encode() not in data, (method, path)

    assert _login(app, user, "wrong")[0] in (400, 401, 403)
    assert _login(app, "mallory", password)[0] in (400, 401, 403)
    status, cookie = _login(app, user, password)
    assert status in (200, 302, 303) and cookie, status
    status, _, config = app.get("/config", headers={"Cookie": cookie})
    assert status == 200 and APP_MARKER.encode() in config
    status, _, data = app.get("/gradio_api/file=" + str(app.data / "runs" / "1-done" / "samples" /
                                                          "step000002_p0.png"), headers={"Cookie": cookie})
    assert status == 200 and data == sample_bytes
    # Even logged in, the job store stays unreachable.
    assert app.get("/gradio_api/file=" + str(app.data / "studio.db"), headers={"Cookie": cookie})[0] in (403, 404)


def test_share_is_off_by_default_and_auth_flag_parses(apps):
    sys.path.insert(0, str(ROOT))
    import app as app_module

    assert app_module.parse_args([]).share is False
    assert app_module.parse_auth("a:b:c") == [("a", "b:c")]   # a list of accounts (studio/login.py)
    with pytest.raises(SystemExit):
        app_module.parse_auth("nopassword")
    for app in apps.values():
        assert "gradio.live" not in app.output()


# --------------------------------------------------------------------------- 3. upload caps


def test_upload_over_the_per_file_cap_is_refused(apps):
    app = apps["open"]  # --max-upload-mb 1
    before = {p for p in app.tmp.rglob("*") if p.is_file()}
    body, ctype = multipart([("big.png", b"\x89PNG" + b"\x00" * (1024 * 1024 - 3))])  # 1 MB + 1 byte
    status, _, data = request(app.port, "POST", "/gradio_api/upload", body, {"Content-Type": ctype}, timeout=30)
    assert status == 413, (status, data[:200])
    after = {p for p in app.tmp.rglob("*") if p.is_file()}
    assert not [p for p in after - before if p.stat().st_size > 1024 * 1024]
    body, ctype = multipart([("ok.png", b"\x89PNG" + b"\x00" * (1024 * 1024 - 4))])  # exactly 1 MB
    assert request(app.port, "POST", "/gradio_api/upload", body, {"Content-Type": ctype}, timeout=30)[0] == 200


def test_many_files_under_the_cap_are_stopped_by_the_total_cap(tmp_path):
    from studio.data.ingest import IngestLimits, ingest
    from studio.ui import handlers as h
    from studio.ui.handlers import UserError

    data = tmp_path / "data"
    h.create_dataset(data, "many")
    files = []
    for i in range(3):
        path = tmp_path / f"part{i}.png"
        path.write_bytes(os.urandom(450 * 1024))  # each under a 1 MB per-file cap
        files.append(str(path))
    with pytest.raises(UserError, match=r"more than the limit of 1 MB"):
        h.upload_files(data, "many", files, max_total_mb=1)
    assert not list((data / "datasets" / "many" / "originals").iterdir())
    # The ingest layer enforces it too, for callers that skip the UI check.
    result = ingest([Path(f) for f in files], data / "datasets" / "many", IngestLimits(max_total_bytes=1024 * 1024))
    codes = result.codes()
    assert codes["part2.png"] == "upload_too_large" and not result.accepted, codes
    # The real limit in plain words (not the setting's name, which a creator never saw).
    assert "limit of 1 MB" in next(r.message for r in result.rejected if r.code == "upload_too_large")


def test_zip_renamed_png_is_rejected_by_content_through_the_upload_handler(tmp_path):
    import io
    import zipfile

    from studio.ui import handlers as h

    data = tmp_path / "data"
    h.create_dataset(data, "sneaky")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inner.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    fake = tmp_path / "holiday.png"
    fake.write_bytes(buf.getvalue())
    message = h.upload_files(data, "sneaky", [str(fake)], max_total_mb=1)
    assert "0 image" in message and "holiday.png" in message and "zip archive" in message, message
    assert not list((data / "datasets" / "sneaky" / "images").iterdir())


# --------------------------------------------------------------------------- 4. API calls


def test_event_endpoints_are_private(apps):
    app = apps["open"]
    status, _, info = app.get("/gradio_api/info")
    assert status == 200
    info = json.loads(info)
    # Only the documented tools (studio/api.py) are named endpoints; the page's events are not.
    from studio.api import StudioTools

    tools = {f"/{name}" for name in StudioTools.NAMES}
    assert set(info["named_endpoints"]) == tools and info["unnamed_endpoints"] == {}, info
    # gradio 6.31 hides private events from the API docs and from gradio_client, but its raw
    # /call/<name> route still runs them by function name (the browser's /queue/join must run
    # them anyway). So the handlers themselves must hold: a server path smuggled in as an
    # "uploaded" file is refused by gradio's file check before our handler sees it.
    from studio.ui import handlers as h

    h.create_dataset(app.data, "api")
    body = json.dumps({"data": ["api", [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
                                        {"path": str(app.data / "studio.db"), "meta": {"_type": "gradio.FileData"}}],
                                "en"]}).encode()
    status, _, data = request(app.port, "POST", "/gradio_api/call/on_upload", body,
                              {"Content-Type": "application/json"})
    if status == 200:
        event = json.loads(data)["event_id"]
        _, _, result = app.get(f"/gradio_api/call/on_upload/{event}", timeout=30)
        assert b"error" in result, result[:500]
    assert not list((app.data / "datasets" / "api" / "originals").iterdir())
    from gradio_client import Client

    client = Client(f"http://127.0.0.1:{app.port}/", verbose=False, download_files=False)
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == tools
    with pytest.raises(Exception):
        client.predict(api_name="/on_start")


def _form(data_dir: Path, **overrides) -> dict:
    from studio.ui import handlers as h

    values, _ = h.preset_values("portrait", "cpu")
    form = dict(base="demo", custom_base="", preset="portrait", tier="cpu", run_name="my-lora", trigger="ohwx",
                **values)
    named = {"steps": "schedule.max_steps", "lr": "optimizer.lr", "rank": "lora.rank",
             "resolution": "dataset.resolution", "prompts": "sample.prompts", "sample_every": "sample.every"}
    dataset = overrides.pop("dataset", "ok")
    form.update({named.get(key, key): value for key, value in overrides.items()})
    return {"dataset": dataset, "form": form}  # build_config's arguments, the form by field name


def _start(data_dir: Path, form: dict) -> str:
    """What the Train tab's Start button runs (studio/ui/train.py on_start)."""
    from studio.ui import handlers as h

    cfg = h.build_config(data_dir, **form, lang="en")
    return h.start_training(data_dir, cfg, "en")[1]


@pytest.mark.parametrize("overrides, expected", [
    ({"steps": -5}, ["schedule.max_steps", "at least 1"]),
    ({"lr": 1e9}, ["optimizer.lr", "not a usable learning rate"]),
    ({"resolution": 70}, ["dataset.resolution", "multiple of 16"]),
    ({"rank": 100000}, ["lora.rank", "far too large"]),
    ({"steps": "lots"}, ["schedule.max_steps"]),
    ({"dataset": "../../etc"}, ["dataset"]),
    ({"custom_base": "/etc"}, ["model.base", "/etc"]),
    ({"custom_base": "../../../etc"}, ["model.base"]),
    ({"run_name": "../../etc"}, ["save.run_name"]),
    ({"run_name": CANARY}, ["save.run_name", "token"]),
    ({"prompts": f"a photo of ohwx {CANARY}"}, ["sample.prompts", "token"]),
])
def test_train_handler_rejects_bad_values_and_paths_with_messages(tmp_path, overrides, expected):
    from studio.jobs import JobStore
    from studio.ui import handlers as h
    from studio.ui.handlers import UserError

    data = tmp_path / "data"
    h.create_dataset(data, "ok")
    make_images(data / "datasets" / "ok" / "images", count=2)
    assert "queued" in _start(data, _form(data))  # the form itself is fine
    store = JobStore(data)
    jobs_before = len(store.list_jobs())
    with pytest.raises(UserError) as err:
        _start(data, _form(data, **overrides))
    message = str(err.value)
    assert "Traceback" not in message and CANARY not in message
    for word in expected:
        assert word in message or (word == "dataset" and "dataset" in message.lower()), (word, message)
    assert len(store.list_jobs()) == jobs_before
    assert CANARY.encode() not in b"".join(p.read_bytes() for p in data.glob("studio.db*"))


# --------------------------------------------------------------------------- 5. secrets


def _cmdlines() -> dict[int, bytes]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                pass
    return out


@pytest.mark.engine
def test_canary_token_is_never_written_or_shown(apps, tiny_model):
    """HF_TOKEN=canary in the app's environment (so in the worker's and the child's), and the
    canary typed where a user might: it must appear in no file, log, UI text or command line."""
    from studio.jobs import JobStore
    from studio.ui import handlers as h, runs
    from studio.ui.handlers import UserError

    app = apps["open"]
    data = app.data
    h.create_dataset(data, "secret")
    make_images(data / "datasets" / "secret" / "images", count=2)
    cfg = h.build_config(data, **_form(data, dataset="secret", custom_base=str(tiny_model), steps=2,
                                       resolution=64, rank=4, sample_every=0, run_name="canary-run"), lang="en")
    cfg.schedule.warmup_steps = 0
    for key, value in (("save.run_name", CANARY), ("sample.prompts", [f"a photo of ohwx {CANARY}"]),
                       ("dataset.default_caption", f"token {CANARY}")):
        typed = cfg.to_dict()
        h.set_key(typed, key, value)
        from studio.config import TrainConfig
        with pytest.raises(UserError, match="token"):
            h.start_training(data, TrainConfig.from_dict(typed), "en")
    cfg.sample.steps, cfg.sample.width, cfg.sample.height, cfg.sample.at_start = 2, 64, 64, False
    cfg.save.every = 1
    job_id, _ = h.start_training(data, cfg, "en")
    # Even if a token slips into the stored config by another path, the store masks it.
    store = JobStore(data)
    sneaky = store.create_job(f"sneaky {CANARY}", {"hf_token": CANARY, "sample": {"prompts": [CANARY]}})
    store.request_cancel(sneaky)

    seen_pids, leaks = set(), []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        for pid, cmdline in _cmdlines().items():
            if CANARY.encode() in cmdline:
                leaks.append((pid, cmdline))
        if job["pid"]:
            seen_pids.add(job["pid"])
        if job["status"] in ("succeeded", "failed", "cancelled", "interrupted"):
            break
        time.sleep(0.2)
    assert not leaks, leaks
    assert job["status"] == "succeeded", (job["error_message"], runs.log_tail(job))
    assert seen_pids, "the child's command line was never seen while it ran"
    # The canary really was in the child's environment (the channel tokens are meant to use).
    assert "HF_TOKEN" in app.env and app.env["HF_TOKEN"] == CANARY

    everything = [p for p in data.rglob("*") if p.is_file()] + [app.log_path]
    assert any(p.suffix == ".safetensors" for p in everything)
    for path in everything:
        assert CANARY.encode() not in path.read_bytes(), path
    views = [runs.job_view(data, job_id), runs.job_view(data, sneaky), runs.result_view(data, job_id)]
    assert CANARY not in repr(views) and CANARY not in repr(store.list_jobs())
