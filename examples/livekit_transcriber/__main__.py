"""``python -m examples.livekit_transcriber``: serve on 0.0.0.0:$PORT (as Render sets it)."""

from .app import main

main()
