"""Host-side view of the wire protocol (the implementation lives in farm.agent.protocol,
which must stay stdlib-only because it ships inside the guest image)."""

from farm.agent.protocol import *  # noqa: F403
from farm.agent.protocol import (  # noqa: F401
    DEFAULT_PORT,
    MAX_FRAME,
    PROTOCOL_VERSION,
    FrameDecoder,
    ProtocolViolation,
    agent_version,
    client_handshake,
    encode,
    read_frame,
    write_frame,
)
