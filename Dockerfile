# The trigger engine image: `docker build -t trigger-engine .`
#   docker run --rm trigger-engine validate rules
#   docker run --rm trigger-engine backtest --rules rules --events examples/sample-events.jsonl
#   docker run --rm -e TRIGGERS_KAFKA__BROKERS='["kafka:9092"]' trigger-engine run
# Kafka and Redis run in their own containers (compose.yaml); this image holds the engine only.
# Dependencies are pinned by constraints.txt (the versions CI tested), the base image by tag.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# bytewax, confluent-kafka (bundles librdkafka), hiredis, msgspec and orjson all ship
# manylinux wheels for CPython 3.11, so no compiler is needed in the image.
RUN groupadd --system --gid 10001 triggers \
 && useradd --system --uid 10001 --gid triggers --home-dir /app --shell /usr/sbin/nologin triggers

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY engine/ engine/
COPY connectors/ connectors/
COPY bench/ bench/
RUN pip install --no-cache-dir -c constraints.txt . \
 && rm -rf build *.egg-info
COPY rules/ rules/
COPY examples/ examples/

# Metrics and health listen on all interfaces inside the container.
ENV TRIGGERS_METRICS_HOST=0.0.0.0
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)" || exit 1

USER triggers
ENTRYPOINT ["triggers"]
CMD ["--help"]
