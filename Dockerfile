# One image for every kubechat role, chosen by the command:
#   docker run IMAGE worker --model-path kubechat:demo --trust-remote-code
#   docker run IMAGE gateway | operator | ui
# CPU by default. For NVIDIA GPUs pick torch's CUDA wheels (they carry the CUDA runtime):
#   docker build --build-arg TORCH_VARIANT=cu128 -t kubechat:cuda .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# cpu, or a CUDA build such as cu126 / cu128: the wheel index and the version's local tag.
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Everything goes into a virtualenv that the runtime stage copies whole.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY deploy/requirements.txt /tmp/requirements.txt
# torch first, the build of the chosen variant (only torch's own wheel index has the local
# version tag); its dependencies are held to the pinned versions.
RUN pip install --extra-index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        --constraint /tmp/requirements.txt "torch==${TORCH_VERSION}+${TORCH_VARIANT}" \
    && pip install --requirement /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kubechat ./kubechat
COPY worker ./worker
COPY agent ./agent
COPY gateway ./gateway
COPY operator ./operator
COPY ui ./ui
# --no-deps: every dependency is already installed at its pinned version above.
RUN pip install --no-deps /src

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="kubechat" \
      org.opencontainers.image.description="LLMs served the FastChat way, Kubernetes-native" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/cache/kubechat \
    KUBECHAT_CACHE=/var/cache/kubechat \
    HF_MODULES_CACHE=/var/cache/kubechat/modules \
    GRADIO_ANALYTICS_ENABLED=False
COPY --from=build /opt/venv /opt/venv
# A fixed non-root user (the chart runs every pod as 10001); the cache folder is the only
# place written at run time, and Kubernetes mounts an emptyDir or a volume there.
RUN groupadd --system --gid 10001 kubechat \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/cache/kubechat \
        --no-create-home --shell /usr/sbin/nologin kubechat \
    && mkdir -p /var/cache/kubechat \
    && chown 10001:10001 /var/cache/kubechat
USER 10001:10001
WORKDIR /var/cache/kubechat
EXPOSE 8000 7860
ENTRYPOINT ["kubechat"]
CMD ["--help"]
