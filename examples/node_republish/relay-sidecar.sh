#!/usr/bin/env bash
# rtmp-relay's app side next to your unchanged Node app, in one service (Render) or one container:
#
#   ./relay-sidecar.sh node ws/server/index.js
#
# relay-client dials the edge (pull mode: RELAY_EDGE_URL=wss://EDGE/link, so nothing listens beyond
# your app's own $PORT) and publishes every stream NAME to your RTMP server as
# $RELAY_REPUBLISH/NAME (default rtmp://127.0.0.1:1935/live/NAME), where your ingest already reads it.
# It may start before your RTMP server: it retries until the server takes the publish.
# SIGTERM (a deploy) goes to both; if either exits, the other is stopped and the script exits with the
# first one's code, so the platform restarts the service instead of running half of it.
set -uo pipefail
: "${RELAY_EDGE_URL:?set RELAY_EDGE_URL to the edge link, wss://EDGE/link}"
: "${RELAY_SECRET:?set RELAY_SECRET to the edge secret}"
export RELAY_REPUBLISH="${RELAY_REPUBLISH:-rtmp://127.0.0.1:1935/live}"
[ $# -gt 0 ] || { echo "usage: $0 YOUR-APP-COMMAND [ARGS...]" >&2; exit 2; }

"${RELAY_CLIENT:-relay-client}" connect &
relay=$!
"$@" &
app=$!
trap 'kill -TERM "$relay" "$app" 2>/dev/null' TERM INT
wait -n "$relay" "$app"
code=$?
kill -TERM "$relay" "$app" 2>/dev/null
wait
exit "$code"
