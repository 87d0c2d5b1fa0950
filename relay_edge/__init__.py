"""rtmp-relay's edge: terminates RTMP and forwards FLV tags over one WebSocket."""

__version__ = "0.1.0"
