"""rtmp-relay's app side: receives the edge's link and decodes the streams."""

__version__ = "0.1.0"
