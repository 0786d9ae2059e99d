# One image for every step: serving (`docker run IMAGE serve`), training
# (`docker run IMAGE train`) and the processing entry points (`python -m processing.<step>`).
# It cannot be built on the development machines (no Docker engine there); it is
# linted with hadolint, and kept simple enough to check by reading.

# On a closed network, point both at the internal registry (an Artifactory remote of
# Docker Hub and of PyPI), e.g.
#   docker build --build-arg BASE_IMAGE=<registry>/python:3.11-slim \
#     --build-arg PIP_INDEX_URL=https://<artifactory>/api/pypi/pypi-remote/simple .
# The defaults are the public ones. Keep the base a python:<major>.<minor> tag: the
# local runner checks its Python against it (pipelines/image.py). The index URL is a
# build-stage argument only (pip reads PIP_INDEX_URL), so it stays out of the runtime
# image; put no token in it (anonymous read on the remote, or a pip.conf outside the
# image).
ARG BASE_IMAGE=python:3.11-slim

# Build stage: install the project and its locked dependencies into a venv.
FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL=https://pypi.org/simple
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
    && /opt/venv/bin/pip install --no-cache-dir --no-compile -c constraints.txt .

# Runtime stage: the venv only (no sources, no build cache). It runs as root, as
# SageMaker expects: it mounts /opt/ml/... at run time owned by root, and an image with a
# non-root USER cannot write its outputs or model there (a build-time chown does not
# reach run-time mounts; sagemaker-python-sdk issues 4678 and 4764). The local runner
# runs each job as this image's USER against root-owned mounts, so a USER line that
# would break on SageMaker fails the local run too (pipelines/local_jobs.py).
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1
COPY --from=build /opt/venv /opt/venv
# Bytecode for every module a process may import, the standard library's included (the
# python base images ship none). Without it each process compiles every module it
# imports from source, at every start (PYTHONDONTWRITEBYTECODE keeps the result from
# being cached): seconds per job and per serving worker (docs/benchmarks.md, "Bytecode
# in the image"). Hash-based and unchecked: the image's files never change, and the
# bytecode is the same at every build. Test folders are skipped (never imported).
RUN python -m compileall -q -j 0 -x '/tests?/' --invalidation-mode unchecked-hash \
        "$(python -c "print(__import__('sysconfig').get_path('stdlib'))")" /opt/venv
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh
WORKDIR /opt/program
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=2)"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
