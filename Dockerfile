# The trigger engine image: `docker build -t trigger-engine .`
#   docker run --rm trigger-engine validate rules
#   docker run --rm trigger-engine backtest --rules rules --events examples/sample-events.jsonl
#   docker run --rm -e TRIGGERS_KAFKA__BROKERS='["kafka:9092"]' trigger-engine run
# Kafka and Redis run in their own containers (compose.yaml); this image holds the engine only.
# Dependencies are pinned by constraints.txt (the versions CI tested), the base image by tag.
#
# Two stages: the first compiles the core with mypyc (README "The compiled core": the same
# source as C extensions, the triggers byte for byte the pure core's) into a wheel; the image
# installs that wheel and carries no compiler. `--build-arg TRIGGERS_COMPILE=0` builds the pure
# core instead (no gcc needed, a smaller build stage; the backtest about a third slower).
FROM python:3.11.11-slim-bookworm AS build

ARG TRIGGERS_COMPILE=1
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# gcc for the C that mypyc writes; the base has Python's headers. mypy (mypyc) and setuptools at
# the versions CI compiled and tested with.
RUN if [ "$TRIGGERS_COMPILE" = 1 ]; then \
        apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /src
COPY pyproject.toml README.md constraints.txt setup.py ./
COPY engine/ engine/
COPY connectors/ connectors/
COPY bench/ bench/
# `pip install .` for the dependencies (mypy reads their types); the wheel is built apart.
RUN pip install --no-cache-dir -c constraints.txt . setuptools wheel $([ "$TRIGGERS_COMPILE" = 1 ] && echo mypy) \
 && TRIGGERS_COMPILE="$TRIGGERS_COMPILE" pip wheel --no-cache-dir --no-build-isolation --no-deps -w /wheels .

FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# bytewax, confluent-kafka (bundles librdkafka), hiredis, msgspec and orjson all ship
# manylinux wheels for CPython 3.11; the engine's own wheel comes from the build stage.
RUN groupadd --system --gid 10001 triggers \
 && useradd --system --uid 10001 --gid triggers --home-dir /app --shell /usr/sbin/nologin triggers

# A compiling build that fell back on pure Python (setup.py says why in the build's output)
# fails here, by the engine's own report of which core it runs.
ARG TRIGGERS_COMPILE=1
WORKDIR /app
COPY constraints.txt ./
COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir -c constraints.txt /tmp/wheels/trigger_engine-*.whl \
 && rm -rf /tmp/wheels \
 && triggers --version \
 && { [ "$TRIGGERS_COMPILE" != 1 ] || triggers --version | grep -q "compiled core"; }
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
