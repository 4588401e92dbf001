# foldwise on CPU: the same pinned environment as `make install`, run as a non-root user.
#   docker build -t foldwise .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD":/work -w /work foldwise
# The default command is `dvc repro` on the mounted checkout; MLflow writes mlflow.db there.
FROM python:3.11-slim

# git: DVC and the audit log record the commit; build-essential is not needed (wheels only).
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# CPU wheels of torch (PyPI's default Linux wheel bundles CUDA, several GB).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV VIRTUAL_ENV=/opt/foldwise PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
RUN python -m venv $VIRTUAL_ENV
ENV PATH=$VIRTUAL_ENV/bin:$PATH

# torch first, pinned, so nothing below can pull a CUDA build.
RUN pip install torch==2.13.0 --index-url $TORCH_INDEX_URL

WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt requirements/constraints.txt
COPY src ./src
# Dependencies only: the code runs from the mounted checkout (PYTHONPATH below), so
# what runs is what DVC hashed in src/, not a copy frozen into the image.
RUN pip install -c requirements/constraints.txt . && pip uninstall -y foldwise && pip check
ENV PYTHONPATH=/work/src

RUN useradd --create-home --uid 1000 foldwise
USER foldwise
# The repo is mounted at run time; git must accept a checkout owned by another uid.
RUN git config --global --add safe.directory '*'
WORKDIR /work
CMD ["dvc", "repro"]
