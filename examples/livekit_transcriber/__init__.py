"""An app for Render: a LiveKit room in, 16 kHz mono PCM to a pluggable transcriber. See README.md."""
