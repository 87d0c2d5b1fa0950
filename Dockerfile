# The rtmp-relay edge: pure Python, no PyAV, no FFmpeg. Used by fly.toml; runs
# anywhere a container can listen on TCP 1935.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY relay_edge ./relay_edge
COPY relay_client ./relay_client
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
