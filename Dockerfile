# One image for every step: processing and training entry points and the serving stack.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OMP_NUM_THREADS=1

WORKDIR /opt/program
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
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh

RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --create-home --uid 1000 model \
    && mkdir -p /opt/ml && chown -R model /opt/ml

USER 1000
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=2)"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
