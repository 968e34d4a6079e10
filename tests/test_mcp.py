"""Agents drive the studio: the real app on loopback, with a login, through an MCP client.

`python app.py --mcp` serves gradio's MCP server at /gradio_api/mcp/. The test connects with the
`mcp` package's own client (streamable HTTP), lists the tools, and runs a whole job with them:
create a dataset, add photos, caption, train the demo model, poll the status until it succeeds,
fetch the LoRA file and compare it with the file on disk. The login applies: no credentials and a
wrong password are refused, and the password never appears in what the tools return.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from test_browser import running_studio

USER, PASSWORD = "maker", "s3cret-Pass:word"
TOOLS = {"list_datasets", "create_dataset", "add_images", "caption_dataset", "check_dataset", "list_options",
         "start_training", "list_jobs", "job_status", "cancel_job", "resume_job", "list_results", "get_file",
         "plan_training", "verify_job"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    with running_studio(tmp_path_factory.mktemp("mcp-studio"), "--mcp",
                        env={"STUDIO_AUTH": f"{USER}:{PASSWORD}", "STUDIO_MCP": ""}) as running:
        yield running


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _photo_uri(i: int) -> str:
    rng = np.random.default_rng(i)
    im = Image.fromarray(rng.integers(0, 255, size=(17, 20, 3), dtype=np.uint8)).resize((320, 272), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _status(url: str, headers: dict | None = None) -> int:
    request = urllib.request.Request(url + "/gradio_api/mcp/", data=b"{}", method="POST",
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_mcp_endpoint_needs_the_login(studio):
    url, _ = studio
    assert _status(url) == 401
    assert _status(url, _basic(USER, "wrong")) == 401
    assert _status(url, _basic("nobody", PASSWORD)) == 401
    # The page's API asks for the same login.
    assert _call_api_status(url, "list_datasets") == 401


def _call_api_status(url: str, name: str) -> int:
    request = urllib.request.Request(f"{url}/gradio_api/call/{name}", data=b'{"data": []}', method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def _session_run(url: str, steps):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url + "/gradio_api/mcp/", headers=_basic(USER, PASSWORD)) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await steps(session)


async def _call(session, tool: str, **arguments):
    result = await session.call_tool(tool, arguments)
    text = "\n".join(part.text for part in result.content if getattr(part, "type", "") == "text")
    if result.isError:
        return {"error": text}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"text": text}


def test_an_agent_trains_a_lora_through_mcp(studio):
    url, data_dir = studio
    seen: list[str] = []

    async def steps(session):
        tools = {tool.name for tool in (await session.list_tools()).tools}
        # Exactly the documented tools: the page's own events (timers, refreshes) are private.
        assert tools == TOOLS, tools ^ TOOLS

        async def call(tool, **arguments):
            answer = await _call(session, tool, **arguments)
            seen.append(json.dumps(answer))
            return answer

        assert (await call("create_dataset", name="mcp-set"))["name"] == "mcp-set"
        bad = await call("add_images", dataset="mcp-set", files=["not a data uri"])
        assert "error" in bad and "data URI" in bad["error"]
        added = await call("add_images", dataset="mcp-set", files=[_photo_uri(i) for i in range(3)],
                           names=[f"red_sneaker_{i}.png" for i in range(3)])
        assert {"name": "mcp-set", "images": 3, "captioned": 0} in added["datasets"], added
        await call("caption_dataset", dataset="mcp-set", captioner="basic", trigger_word="zxq", class_word="sneaker")
        assert (await call("list_datasets")) == [{"name": "mcp-set", "images": 3, "captioned": 3}]
        report = await call("check_dataset", dataset="mcp-set", resolution=256, trigger_word="zxq")
        assert report["images"]["count"] == 3 and report["captions"]["with_trigger"] == 3, report["summary"]
        options = await call("list_options")
        assert "demo" in [m["base"] for m in options["models"]] and "cpu" in options["tiers"]
        plan = await call("plan_training", dataset="mcp-set", gpu="RTX 4090")
        assert plan["tier"] == "16gb" and plan["images"] == 3 and len(plan["rows"]) == 4
        refused = await call("start_training", dataset="mcp-set", overrides={"lora.rank": "many"})
        assert "error" in refused and "lora.rank" in refused["error"]
        started = await call("start_training", dataset="mcp-set", run_name="mcp-lora", trigger_word="zxq",
                             tier="cpu", overrides={"schedule.max_steps": 3, "sample.every": 0,
                                                    "sample.at_start": False, "dataset.resolution": 256})
        assert "job_id" in started, started
        job_id = started["job_id"]
        deadline, status = time.time() + 600, {}
        while time.time() < deadline:
            status = await call("job_status", job_id=job_id)
            if status["status"] in ("succeeded", "failed", "cancelled", "interrupted"):
                break
            await asyncio.sleep(2)
        assert status["status"] == "succeeded", status
        assert status["step"] == 3 and "mcp-lora.safetensors" in status["files"]
        proof = await call("verify_job", job_id=job_id)
        assert proof["ok"] and len(proof["checks"]) == 5, proof
        results = await call("list_results")
        assert [r["id"] for r in results] == [job_id]
        lora = await call("get_file", job_id=job_id, file="mcp-lora.safetensors")
        missing = await call("get_file", job_id=job_id, file="../../studio.db")
        assert "error" in missing
        return job_id, lora

    job_id, lora = asyncio.run(_session_run(url, steps))
    on_disk = next(data_dir.glob("runs/*/mcp-lora.safetensors")).read_bytes()
    content = base64.b64decode(lora["data"].split(",", 1)[1])
    assert content == on_disk and lora["sha256"] == hashlib.sha256(on_disk).hexdigest()
    assert not any(PASSWORD in text for text in seen)


def test_failed_mcp_logins_are_throttled_like_the_page(studio):
    """Runs last: it locks this client out for a while."""
    url, data_dir = studio
    failures, refusals, deadline = 0, 0, time.time() + 120
    while failures < 9 and time.time() < deadline:  # 5 free failures, then locks of 1, 2, 4, 8 s
        status = _status(url, _basic(USER, "wrong"))
        assert status in (401, 429)
        failures, refusals = failures + (status == 401), refusals + (status == 429)
        if status == 429:
            time.sleep(0.5)
    assert failures == 9 and refusals > 0
    assert _status(url, _basic(USER, PASSWORD)) == 429  # locked for 8 s: even the right password waits
    log = (data_dir / "app.log").read_text(errors="replace")
    assert "login failed for user 'maker'" in log and PASSWORD not in log and "wrong" not in log


def test_tools_refuse_bad_arguments_clearly(tmp_path):
    """Direct calls, no server: wrong shapes of input get a message, and the page's upload cap holds."""
    from studio.api import StudioTools, ToolError
    from studio.ui.handlers import UserError

    tools = StudioTools(tmp_path, max_upload_mb=1)
    tools.create_dataset("capped")
    with pytest.raises(ToolError, match="overrides must be an object"):
        tools.start_training("capped", overrides=[("lora.rank", 8)])
    big = "data:image/png;base64," + base64.b64encode(b"\0" * (2 * 1024**2)).decode()
    with pytest.raises(UserError):
        tools.add_images("capped", [big])
    assert tools.list_datasets() == [{"name": "capped", "images": 0, "captioned": 0}]
