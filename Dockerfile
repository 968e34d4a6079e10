# Flux LoRA Studio: the Gradio app plus its background worker in one image.
#
# Base: NVIDIA's CUDA *runtime* image (not -devel: nothing is compiled here). Its CUDA major
# (13.0) matches the torch wheel pinned in requirements.txt (torch 2.14.1 = cu130), whose own
# nvidia-* wheels carry cuDNN/cuBLAS, so the smaller non-cudnn variant is enough. The host needs
# an NVIDIA driver for CUDA 13 and the NVIDIA Container Toolkit. Without a GPU the same image
# runs on CPU (the demo model trains there). pytorch/pytorch was not chosen: it ships its own
# torch and conda Python, and pip would install the pinned torch a second time next to it.
#
# Python 3.11 (the version the studio is tested with; Ubuntu 24.04 ships 3.12) comes from uv's
# standalone builds, in a venv at /opt/venv.
FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04

ARG UV_VERSION=0.13.9
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# python3-venv only bootstraps uv; git for hub revisions; libgl/glib for image libraries.
# Not pinned to exact versions: Ubuntu replaces them in its archive, and a pin would break builds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv ca-certificates git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}" \
    && /opt/uv/bin/uv venv --python 3.11 /opt/venv

# Requirements first so that a code change does not reinstall torch.
# They include bitsandbytes and torchao for the 16/12/8 GB tiers.
COPY requirements.txt /app/
RUN /opt/uv/bin/uv pip install --python /opt/venv/bin/python -r /app/requirements.txt

# uid 1000 (the usual first user on a host, and what HF Docker Spaces use); Ubuntu's image has
# an "ubuntu" user with that id, removed first.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --uid 1000 --user-group --shell /bin/bash studio \
    && mkdir -p /data \
    && chown studio:studio /data

COPY --chown=studio:studio . /app
WORKDIR /app

ENV STUDIO_DATA=/data \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HOME=/data/hf-cache

VOLUME /data
EXPOSE 7860

# = studio (numeric so that runtimes checking runAsNonRoot can verify it)
USER 1000:1000

# Standard library only, so the probe is cheap: 0 when the app answers HTTP 200.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-m", "studio.health", "--url", "http://127.0.0.1:7860/", "--timeout", "5"]

CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
