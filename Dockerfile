# One image for every step: serving (`docker run IMAGE serve`), training
# (`docker run IMAGE train`) and the processing entry points (`python -m processing.<step>`).
# It cannot be built on the development machines (no Docker engine there); it is
# linted with hadolint, and kept simple enough to check by reading.

# Build stage: install the project and its locked dependencies into a venv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY setup.cfg pyproject.toml constraints.txt README.md ./
COPY conf ./conf
COPY pipelines ./pipelines
COPY processing ./processing
COPY training ./training
COPY inference ./inference
COPY features ./features
COPY stack ./stack
COPY datagen ./datagen
COPY snowflake ./snowflake
COPY monitoring ./monitoring
COPY dashboard ./dashboard
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# Runtime stage: the venv only (no sources, no build cache). It runs as root, as
# SageMaker expects: it mounts /opt/ml/... at run time owned by root, and an image with a
# non-root USER cannot write its outputs or model there (a build-time chown does not
# reach run-time mounts; sagemaker-python-sdk issues 4678 and 4764). The local runner
# runs each job as this image's USER against root-owned mounts, so a USER line that
# would break on SageMaker fails the local run too (pipelines/local_jobs.py).
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1
COPY --from=build /opt/venv /opt/venv
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh
WORKDIR /opt/program
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=2)"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
