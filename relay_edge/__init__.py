"""rtmp-relay's edge: terminates RTMP and forwards FLV tags over one WebSocket."""

from .accel import use_compiled

__version__ = "0.1.0"

use_compiled(__path__)  # the compiled core first, when built and current (relay_edge/accel.py)
