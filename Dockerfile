# The trigger engine image: `docker build -t trigger-engine .`
#   docker run --rm trigger-engine validate rules
#   docker run --rm trigger-engine backtest --rules rules --events examples/sample-events.jsonl
# Kafka and Redis run in their own containers (see the compose file); this image holds the engine only.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# bytewax, confluent-kafka (bundles librdkafka), hiredis, msgspec and orjson all ship
# manylinux wheels for CPython 3.11, so no compiler is needed in the image.
RUN groupadd --system --gid 10001 triggers \
 && useradd --system --uid 10001 --gid triggers --home-dir /app --shell /usr/sbin/nologin triggers

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine/ engine/
COPY connectors/ connectors/
COPY bench/ bench/
RUN pip install --no-cache-dir . \
 && rm -rf build *.egg-info
COPY rules/ rules/
COPY examples/ examples/

USER triggers
ENTRYPOINT ["triggers"]
CMD ["--help"]
