"""Publishing a run to the Hub, offline: a real tiny run uploaded to a fake Hub API on 127.0.0.1
(tests/fake_hub.py implements the calls huggingface_hub makes)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from fake_hub import FakeHub
from studio.publish import PublishError, model_card, publish_run, read_safetensors_metadata, redact

REPO = Path(__file__).resolve().parent.parent
CANARY = "hf_CANARYtoken0123456789abcdef"


# ---------------------------------------------------------------------------------------------
# A finished run: one real (schnell, trained on the tiny model), one dev copy of it


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("publish")
    env = {**os.environ, "STUDIO_DATA": str(root / "data")}
    subprocess.run([sys.executable, "-m", "studio", "tiny-model", str(root / "model")], cwd=REPO, env=env,
                   check=True, capture_output=True)
    ds = root / "ds"
    ds.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 120, 200 - 30 * i)).save(ds / f"img{i}.png")
        (ds / f"img{i}.txt").write_text(f"a photo of sks, number {i}")
    cfg = {"model": {"base": str(root / "model")},
           "dataset": {"path": str(ds), "trigger_word": "sks", "resolution": 64},
           "schedule": {"max_steps": 2, "warmup_steps": 1},
           "sample": {"every": 2, "steps": 1, "width": 64, "height": 64, "prompts": ["a photo of [trigger]"]},
           "save": {"output_dir": str(root / "out"), "run_name": "demo", "every": 0},
           "memory": {"tier": "cpu"}, "lora": {"rank": 4, "alpha": 4}}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    done = subprocess.run([sys.executable, "-m", "studio", "train", str(root / "cfg.yaml")], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = root / "out" / "demo"
    assert (run / "demo.safetensors").is_file() and (run / "demo-comfyui.safetensors").is_file()
    return run


def _set_metadata(path: Path, **changes: str) -> None:
    """Rewrite a safetensors file's metadata in place (header only; tensor bytes are kept)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    header["__metadata__"] = {**header.get("__metadata__", {}), **changes}
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + size:])


def _relabelled(real_run, tmp_path_factory, family: str) -> Path:
    """The tiny run as if trained on a local FLUX.1 folder (an older file's metadata kept a path)."""
    run = tmp_path_factory.mktemp(family) / "demo"
    shutil.copytree(real_run, run)
    for name in ("demo.safetensors", "demo-comfyui.safetensors"):
        _set_metadata(run / name, base_family=family, base_model=f"/models/FLUX.1-{family}-local")
    return run


@pytest.fixture(scope="module")
def dev_run(real_run, tmp_path_factory) -> Path:
    return _relabelled(real_run, tmp_path_factory, "dev")


@pytest.fixture(scope="module")
def schnell_run(real_run, tmp_path_factory) -> Path:
    return _relabelled(real_run, tmp_path_factory, "schnell")


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """conftest.py switches the Hub client offline; these tests only ever talk to 127.0.0.1."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def assert_no_canary(caplog, capsys, *texts):
    captured = capsys.readouterr()
    everything = "\n".join([caplog.text, captured.out, captured.err, *map(str, texts)])
    assert CANARY not in everything


# ---------------------------------------------------------------------------------------------
# Model card


def test_model_card_schnell(schnell_run):
    card = model_card(schnell_run, repo_id="alice/demo")
    meta = front_matter(card)
    assert meta["base_model"] == "black-forest-labs/FLUX.1-schnell"   # local path -> the family's Hub id
    assert meta["license"] == "apache-2.0" and "license_name" not in meta
    assert meta["tags"] == ["flux", "lora", "diffusers", "text-to-image", "template:sd-lora"]
    assert meta["instance_prompt"] == "sks"
    assert meta["widget"] == [{"text": "a photo of sks", "output": {"url": "samples/step000002_p0.png"}}]
    assert (schnell_run / meta["widget"][0]["output"]["url"]).is_file()
    assert "FLUX.1-schnell-local" not in card   # the local folder is not named
    assert 'pipe.load_lora_weights("alice/demo", weight_name="demo.safetensors")' in card
    assert "models/loras" in card and "demo-comfyui.safetensors" in card
    assert "| LoRA rank / alpha | 4 / 4.0 |" in card and "| Steps | 2 |" in card
    assert "num_inference_steps=4, guidance_scale=0.0" in card
    assert "Apache-2.0" in card.split("## Licence")[1]


def test_model_card_of_a_demo_run_names_the_demo_model(real_run):
    """The tiny model is the studio's demo model: the card must not call the LoRA a FLUX.1 [schnell] one."""
    card = model_card(real_run, repo_id="alice/demo")
    meta = front_matter(card)
    assert "base_model" not in meta   # the demo model is not on the Hub
    assert meta["license"] == "apache-2.0" and "flux" not in meta["tags"]
    assert "schnell" not in card.lower() and "FLUX.1-" not in card
    assert "flux-lora-studio-demo" in card and "not FLUX.1" in card
    assert "demo model" in card.split("## Licence")[1] and "Apache-2.0" in card.split("## Licence")[1]
    assert "| Base model | flux-lora-studio-demo" in card
    # How to draw: the run's own sample settings, not FLUX.1 [schnell]'s 4 steps.
    assert 'image = pipe("a photo of sks", num_inference_steps=1, height=64, width=64).images[0]' in card


@pytest.mark.parametrize("fixture,draw", [
    ("real_run", 'num_inference_steps=1, height=64, width=64, true_cfg_scale=3.0, negative_prompt="").images[0]'),
    ("schnell_run", 'num_inference_steps=4, guidance_scale=0.0, true_cfg_scale=3.0, negative_prompt="").images[0]'),
])
def test_model_card_draws_with_the_runs_guidance_against_the_empty_prompt(fixture, draw, request, tmp_path):
    """A run whose samples used guidance against the empty prompt (the demo model's do): the card's
    code draws with it too."""
    run = tmp_path / "run"
    shutil.copytree(request.getfixturevalue(fixture), run)
    assert "true_cfg_scale" not in model_card(run, repo_id="alice/demo")
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    config["sample"]["true_cfg"] = 3.0
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert draw in model_card(run, repo_id="alice/demo")


def test_model_card_dev_is_non_commercial(dev_run):
    card = model_card(dev_run)
    meta = front_matter(card)
    assert meta["base_model"] == "black-forest-labs/FLUX.1-dev"
    assert meta["license"] == "other"
    assert meta["license_name"] == "flux-1-dev-non-commercial-license"
    assert meta["license_link"].startswith("https://huggingface.co/black-forest-labs/FLUX.1-dev/")
    assert "non-commercial" in card.split("## Licence")[1]
    assert "<username>/<repo>" in card   # no repo id given: a placeholder, not a guess


@pytest.mark.parametrize("family,variant,pipeline,hub_id,licence,mode", [
    ("flux2-klein", "base-4b", "Flux2KleinPipeline", "black-forest-labs/FLUX.2-klein-base-4B", "apache-2.0",
     "text-to-image"),
    ("flux2-klein", "base-9b", "Flux2KleinPipeline", "black-forest-labs/FLUX.2-klein-base-9B", "other", "text-to-image"),
    ("flux2-klein", "base-4b", "Flux2KleinPipeline", "black-forest-labs/FLUX.2-klein-base-4B", "apache-2.0", "edit"),
    ("flux1-kontext", "dev", "FluxKontextPipeline", "black-forest-labs/FLUX.1-Kontext-dev", "other", "edit"),
])
def test_model_card_follows_the_model_family(family, variant, pipeline, hub_id, licence, mode, real_run, tmp_path):
    """The card follows the family (pipeline, base, licence) and the mode the run recorded (an edit
    LoRA's card is image-to-image with the input-image call)."""
    from studio.families import get_family

    run = tmp_path / "demo"
    shutil.copytree(real_run, run)
    _set_metadata(run / "demo.safetensors", model_family=family, model_variant=variant, base_family=variant,
                  base_model="/models/local-copy", training_mode=mode)
    card = model_card(run, repo_id="alice/x")
    meta = front_matter(card)
    title = get_family(family).variants[variant].title
    assert meta["base_model"] == hub_id and meta["license"] == licence
    assert f"from diffusers import {pipeline}" in card and f"A {title} " in card and "FluxPipeline" not in card
    if licence == "other":
        assert meta["license_link"] == f"https://huggingface.co/{hub_id}/blob/main/LICENSE.md"
        assert "non-commercial purposes only" in card.split("## Licence")[1]
    else:
        assert "may be used commercially" in card.split("## Licence")[1]
    edit = mode == "edit"
    assert meta["pipeline_tag"] == ("image-to-image" if edit else "text-to-image")
    assert ('image=load_image("before.png")' in card) is edit


def test_model_card_keeps_a_hub_base_model(dev_run, tmp_path):
    run = tmp_path / "demo"
    shutil.copytree(dev_run, run)
    _set_metadata(run / "demo.safetensors", base_model="someone/flux-dev-finetune")
    assert front_matter(model_card(run))["base_model"] == "someone/flux-dev-finetune"


def test_model_card_refuses_an_unfinished_run(real_run, tmp_path):
    run = tmp_path / "demo"
    shutil.copytree(real_run, run)
    (run / "demo-comfyui.safetensors").unlink()
    with pytest.raises(PublishError, match="no finished LoRA"):
        model_card(run)


def test_metadata_read_without_torch(real_run):
    meta = read_safetensors_metadata(real_run / "demo.safetensors")
    assert meta["trigger_word"] == "sks" and meta["base_family"] == "demo"


# ---------------------------------------------------------------------------------------------
# Publishing


@pytest.mark.parametrize("family", ["schnell", "dev"])
def test_publish_uploads_everything(family, schnell_run, dev_run, caplog, capsys):
    run = schnell_run if family == "schnell" else dev_run
    caplog.set_level(logging.DEBUG)
    seen = []
    with FakeHub() as hub:
        url = publish_run(run, "alice/my-lora", token=CANARY, endpoint=hub.url,
                          progress=lambda done, total, message: seen.append((done, total, message)))
    assert url == f"{hub.url}/alice/my-lora"
    assert hub.repos["alice/my-lora"]["visibility"] == "private"
    files = hub.files["alice/my-lora"]
    samples = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert set(files) == {"demo.safetensors", "demo-comfyui.safetensors", "config.yaml", "README.md",
                          *(f"samples/{s}" for s in samples)}
    assert files["demo.safetensors"] == (run / "demo.safetensors").read_bytes()
    assert files["demo-comfyui.safetensors"] == (run / "demo-comfyui.safetensors").read_bytes()
    # config.yaml names the model and dataset but no folder of this computer
    published, local = yaml.safe_load(files["config.yaml"]), yaml.safe_load((run / "config.yaml").read_text())
    assert published["model"]["base"] == Path(local["model"]["base"]).name == "model"
    assert published["dataset"]["path"] == "ds" and "output_dir" not in published["save"]
    assert str(run.parents[1]) not in files["config.yaml"].decode()
    assert {k: v for k, v in published.items() if k not in ("model", "dataset", "save")} == \
        {k: v for k, v in local.items() if k not in ("model", "dataset", "save")}
    meta = front_matter(files["README.md"].decode())
    assert meta["license"] == ("apache-2.0" if family == "schnell" else "other")
    for widget in meta["widget"]:
        assert widget["output"]["url"] in files
    assert all(h.get("authorization") == f"Bearer {CANARY}" for _, _, h in hub.requests)
    assert seen[0][0] == 0 and seen[-1] == (3, 3, "done")
    assert_no_canary(caplog, capsys, seen)


def test_token_from_env_and_bare_repo_name(real_run, monkeypatch, caplog, capsys):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    caplog.set_level(logging.DEBUG)
    with FakeHub() as hub:
        url = publish_run(real_run, "bare-name", endpoint=hub.url, private=False)
    assert url.endswith("/alice/bare-name")   # namespace from whoami
    assert hub.repos["alice/bare-name"]["visibility"] == "public"
    assert "README.md" in hub.files["alice/bare-name"]
    assert_no_canary(caplog, capsys)


def test_no_token(real_run):
    with pytest.raises(PublishError, match="HF_TOKEN"):
        publish_run(real_run, "alice/x", endpoint="http://127.0.0.1:9")


@pytest.mark.parametrize("name", ["bad name", "alice/-x", "a/b/c", "alice/x..y", "", "alice/" + "x" * 97])
def test_invalid_repo_name_is_refused_before_any_request(name, real_run):
    with FakeHub() as hub:
        with pytest.raises(PublishError, match="Invalid repo name"):
            publish_run(real_run, name, token=CANARY, endpoint=hub.url)
    assert hub.requests == []


@pytest.mark.parametrize("where, status, expected", [
    ("/api/whoami-v2", 401, "rejected the token"),
    ("/api/repos/create", 401, "rejected the token"),
    ("/commit/", 401, "rejected the token"),
    ("/commit/", 403, "may not write"),
    ("/preupload/", 400, "HTTP 400"),
])
def test_hub_errors_are_clear_and_token_free(where, status, expected, real_run, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with FakeHub(fail={where: (status, {"error": "nope"})}) as hub:
        with pytest.raises(PublishError, match=expected) as info:
            publish_run(real_run, "alice/x", token=CANARY, endpoint=hub.url)
    # The fake server echoed the Authorization header into its error body.
    assert CANARY not in str(info.value) and info.value.__cause__ is None
    assert_no_canary(caplog, capsys, info.value, repr(info.value))


def test_read_only_token(real_run, caplog, capsys):
    with FakeHub(role="read") as hub:
        with pytest.raises(PublishError, match="read-only"):
            publish_run(real_run, "alice/x", token=CANARY, endpoint=hub.url)
    assert not hub.files


def test_unreachable_network_fails_fast(real_run, caplog, capsys):
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PublishError, match="Cannot reach") as info:
        publish_run(real_run, "alice/x", token=CANARY, endpoint=f"http://127.0.0.1:{port}")
    assert_no_canary(caplog, capsys, info.value)


def test_silent_server_times_out(real_run):
    import time
    with socket.socket() as s:   # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        start = time.monotonic()
        with pytest.raises(PublishError, match="Cannot reach"):
            publish_run(real_run, "alice/x", token=CANARY, endpoint=f"http://127.0.0.1:{s.getsockname()[1]}",
                        timeout=0.5)
        assert time.monotonic() - start < 5


def test_offline_mode_is_explained(real_run, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        publish_run(real_run, "alice/x", token=CANARY, endpoint="http://127.0.0.1:9")


def test_redact():
    # One mask for the whole studio (studio/core/secrets.py): the job store and the publisher agree.
    assert redact(f"Bearer {CANARY} and hf_short") == "Bearer [REDACTED] and hf_short"


def _cmdlines_with(secret: bytes, seen: list, stop) -> None:
    while not stop.is_set():
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and secret in (entry / "cmdline").read_bytes():
                    seen.append(entry.name)
            except OSError:
                pass
        stop.wait(0.02)


def test_results_tab_publishes_a_finished_job(real_run, tmp_path, monkeypatch, caplog, capsys):
    """The Results tab's publish handler: a finished job's files reach the Hub, and the token typed
    there goes to the Hub's HTTP client and nowhere else: not the returned message or error (even
    from a server that echoes credentials), the logs, any file of the data folder (job store,
    train.log, worker.log), what is uploaded (card, config, LoRA metadata), gradio's temp folder,
    or a command line."""
    import threading

    from studio.jobs import JobStore
    from studio.ui import runs

    caplog.set_level(logging.DEBUG)
    data, gradio_tmp = tmp_path / "data", tmp_path / "gradio-tmp"
    gradio_tmp.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_tmp))
    store = JobStore(data)
    job_id = store.create_job("demo", {"save": {"run_name": "demo"}})
    job = store.claim_next("test")
    shutil.copytree(real_run, job["run_dir"], dirs_exist_ok=True)
    store.finish(job_id, "succeeded", exit_code=0)
    (data / "worker.log").write_text("worker: serving\n")
    seen_in_cmdlines, stop = [], threading.Event()
    watcher = threading.Thread(target=_cmdlines_with, args=(CANARY.encode(), seen_in_cmdlines, stop), daemon=True)
    watcher.start()
    try:
        with FakeHub() as hub:
            monkeypatch.setenv("HF_ENDPOINT", hub.url)
            message = runs.publish(data, job_id, "alice/from-ui", CANARY, True)
            sent = {headers.get("authorization") for _, _, headers in hub.requests}
        with FakeHub(fail={"/api/repos/create": (500, {"error": "internal"})}) as echoing:
            monkeypatch.setenv("HF_ENDPOINT", echoing.url)
            with pytest.raises(runs.UserError) as failed:
                runs.publish(data, job_id, "alice/from-ui", CANARY, True)
        with pytest.raises(runs.UserError):
            runs.publish(data, job_id, "not a repo", CANARY, True)
    finally:
        stop.set()
        watcher.join(5)
    assert sent == {f"Bearer {CANARY}"}   # the token did reach the Hub's HTTP client
    assert f"{hub.url}/alice/from-ui" in message and "500" in str(failed.value)
    uploaded = hub.files["alice/from-ui"]
    assert {"demo.safetensors", "demo-comfyui.safetensors", "README.md", "config.yaml"} <= set(uploaded)
    assert not [name for name, content in uploaded.items() if CANARY.encode() in content]
    files = [p for folder in (data, gradio_tmp) for p in folder.rglob("*") if p.is_file()]
    assert {"studio.db", "worker.log", "config.yaml"} <= {p.name for p in files}
    assert not [p for p in files if CANARY.encode() in p.read_bytes()]
    assert not seen_in_cmdlines
    assert_no_canary(caplog, capsys, message, failed.value)


def test_publish_refuses_files_that_fail_verification(real_run, tmp_path):
    """Proven before it ships: a ComfyUI file with a doubled alpha is never uploaded."""
    from safetensors.torch import load_file, save_file

    from studio.lora_files import read_metadata

    run = tmp_path / "run"
    shutil.copytree(real_run, run)
    comfy = run / "demo-comfyui.safetensors"
    tensors, metadata = load_file(comfy), read_metadata(comfy)
    key = next(k for k in sorted(tensors) if k.endswith(".alpha"))
    tensors[key] = tensors[key] * 2
    save_file(tensors, comfy, metadata=metadata)
    with FakeHub() as hub:
        with pytest.raises(PublishError, match="failed verification.*2x the diffusers file's"):
            publish_run(run, "alice/my-lora", token=CANARY, endpoint=hub.url)
        assert hub.repos == {}
