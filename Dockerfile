# medvision on a GPU host. The CUDA runtime comes from the base image; torch's CUDA wheel
# is pinned to the same release as the CPU build used in development and CI.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.12 -m venv /opt/medvision

ENV PATH=/opt/medvision/bin:$PATH
WORKDIR /app

# torch first and pinned, so that nothing below can pull another build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128

COPY pyproject.toml README.md ./
COPY medvision ./medvision
COPY models ./models
RUN pip install .

RUN useradd --system --home /data medvision && mkdir -p /data && chown medvision /data
USER medvision
WORKDIR /data
VOLUME ["/data"]
# DICOM (C-STORE SCP) and HTTP (API and viewer).
EXPOSE 11112 8080
ENTRYPOINT ["medvision"]
CMD ["--help"]
