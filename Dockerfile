# The rtmp-relay edge: Python, no PyAV, no FFmpeg. Used by fly.toml; runs
# anywhere a container can listen on TCP 1935.

# The compiled core (relay_edge/accel.py): mypyc builds of the per-tag modules, made in this
# stage, which has a C compiler, and copied into the image, which has none. ACCEL=0 skips it:
# the pure-Python core then runs (about a third more CPU per tag; bench/README.md).
FROM python:3.11-slim AS accel
ARG ACCEL=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY relay_edge ./relay_edge
COPY scripts/build_accel.py ./scripts/
RUN mkdir -p relay_edge/compiled && if [ "$ACCEL" = 1 ]; then \
      apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null && \
      pip install "mypy==1.19.1" && python scripts/build_accel.py; \
    fi

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY relay_edge ./relay_edge
COPY relay_client ./relay_client
COPY --from=accel /src/relay_edge/compiled ./relay_edge/compiled
# The edge extra only: msgpack, websockets, aiohttp, click, prometheus-client; plus uvloop (the fast extra).
RUN pip install ".[edge]" "uvloop>=0.19" && rm -rf /src

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin relay
USER relay
WORKDIR /home/relay

ENV RELAY_RTMP_LISTEN=0.0.0.0:1935 \
    RELAY_HTTP_LISTEN=0.0.0.0:8080
EXPOSE 1935 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=5s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

# RELAY_SECRET comes from the platform's secrets; RELAY_UPSTREAM from fly.toml [env].
STOPSIGNAL SIGTERM
CMD ["relay-edge", "serve"]
