# foldwise: the same pinned environment as `make install`, run as a non-root user.
#   docker build -t foldwise .                                  # CPU (default)
#   docker build --build-arg VARIANT=cuda -t foldwise:cuda .    # NVIDIA GPUs
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD":/work -w /work foldwise
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD":/work -w /work foldwise:cuda
# The default command is `dvc repro` on the mounted checkout; MLflow writes mlflow.db there.
#
# The variants differ in the torch wheel only: cpu takes PyTorch's CPU index; cuda takes
# PyPI's default Linux wheel of torch==2.13.0, which is the CUDA 13 build and brings its
# CUDA libraries as wheels (cuda-toolkit, nvidia-cudnn-cu13, ...), so the base stays the
# same python:3.11-slim and only the host's NVIDIA driver (>= 580) is needed, mounted by
# the NVIDIA Container Toolkit (`--gpus all`). TORCH_INDEX_URL overrides either index.
ARG VARIANT=cpu

FROM python:3.11-slim AS base
# git: DVC and the audit log record the commit; build-essential is not needed (wheels only).
# Not pinned to a Debian version (DL3008): the base image's security updates replace old
# package versions in its archive, so a pin would break the build within weeks.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/foldwise PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
RUN python -m venv $VIRTUAL_ENV
ENV PATH=$VIRTUAL_ENV/bin:$PATH

FROM base AS torch-cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV FOLDWISE_TORCH_INDEX_URL=$TORCH_INDEX_URL

FROM base AS torch-cuda
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV FOLDWISE_TORCH_INDEX_URL=$TORCH_INDEX_URL \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility

# DL3006 (untagged image): torch-${VARIANT} is one of the stages above, not an image.
# hadolint ignore=DL3006
FROM torch-${VARIANT}
# torch first, pinned, so nothing below can pull another build (as the Makefile does).
RUN pip install --no-cache-dir torch==2.13.0 --index-url "$FOLDWISE_TORCH_INDEX_URL"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
COPY src ./src
# Dependencies only: the code runs from the mounted checkout (PYTHONPATH below), so
# what runs is what DVC hashed in src/, not a copy frozen into the image.
RUN pip install --no-cache-dir -c requirements/constraints.txt . && pip uninstall -y foldwise && pip check
ENV PYTHONPATH=/work/src

RUN useradd --create-home --uid 1000 foldwise
USER 1000:1000
# The repo is mounted at run time; git must accept a checkout owned by another uid.
RUN git config --global --add safe.directory '*'
WORKDIR /work
CMD ["dvc", "repro"]
