# medvision node image: `docker build -t medvision .`, then
#   docker run -d --gpus all -p 11112:11112 -p 8080:8080 -v medvision-data:/data medvision
#
# One CUDA copy: the base is a plain Debian Python (the same Python 3.11 as CI, Debian 12),
# with no CUDA of its own; torch's CUDA wheel brings its CUDA libraries as pip packages
# (nvidia-*), so nothing is installed twice and the host needs only the NVIDIA driver
# (NVIDIA Container Toolkit). Without a GPU the same image runs on CPU. For a CPU-only image
# (about 2 GB smaller): --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#
# The install steps are the project's own: scripts/install.sh, the README's first command,
# here non-editable into /opt/medvision with the node's extras (PostgreSQL, scale-out).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG MEDVISION_EXTRAS=postgres,scale

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

# A base without Python 3.11 and its venv module (a plain Debian 12 image) gets Debian's.
RUN if ! python3.11 -m venv --help >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# What `pip install .` needs, and nothing else of the repository (no tests, no samples).
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY scripts/install.sh ./scripts/install.sh
COPY models ./models
COPY medvision ./medvision
RUN PYTHON=python3.11 MEDVISION_VENV=/opt/medvision MEDVISION_EDITABLE=0 \
        MEDVISION_EXTRAS="$MEDVISION_EXTRAS" TORCH_INDEX_URL="$TORCH_INDEX_URL" \
        bash scripts/install.sh \
    && rm -rf /src

# The API listens on 127.0.0.1 unless told otherwise (docs/node.md, deny by default); in a
# container that address cannot be reached through a published port, and publishing the
# port (`-p 8080:8080`) is the operator's explicit choice, so the image listens on all of
# the container's addresses. DICOM stays closed until modalities are configured.
ENV PATH=/opt/medvision/bin:$PATH \
    MEDVISION_DATA_DIR=/data \
    MEDVISION_MODELS_DIR=/data/models \
    MEDVISION_HTTP_BIND_ADDRESS=0.0.0.0

# Not root: the node needs no privilege (its ports are above 1024).
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home medvision \
    && mkdir -p /data \
    && chown medvision:medvision /data
USER medvision
WORKDIR /data
# Spool, results, the SQLite database and imported models: keep them on a volume.
VOLUME ["/data"]
# DICOM (C-STORE SCP) and HTTP (API, viewer, /health, /metrics).
EXPOSE 11112 8080
# /health over HTTP, or HTTPS when MEDVISION_TLS_CERT is set (the node's own certificate).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as r; tls = bool(os.environ.get('MEDVISION_TLS_CERT')); url = ('https' if tls else 'http') + '://127.0.0.1:' + os.environ.get('MEDVISION_HTTP_PORT', '8080') + '/health'; r.urlopen(url, timeout=5, context=ssl._create_unverified_context() if tls else None)"]
ENTRYPOINT ["medvision"]
CMD ["serve"]
