"""Traffic generation (seed 002): a TCP server that sinks or echoes, and a client loop.

Stdlib only and independent of the rest of farm (it runs inside the guest
image): the agent runs ``python -S -s -P -m farm.agent.traffic`` for the pkgs
``traffic_server`` / ``traffic_client``, and anyone can run
``python -m farm.agent.traffic server|client ...`` (see ``--help`` and
docs/traffic.md). Modules: ``dist`` (distributions), ``config`` (keys,
validation, destinations), ``wire`` (framing), ``stats``, ``client``,
``server``, ``__main__`` (command line). Task configs and command-line flags share one set of
keys and one validation (:func:`server_config`, :func:`client_config`).

Wire: every message is a 16-byte header (payload length, flags, sequence
number; big endian) plus ``size`` payload bytes. The server answers each
message: ``echo`` sends it back whole, ``sink`` sends the header alone with
the ACK flag. So the client knows every message arrived, measures its
round-trip latency, and counts bytes exactly: ``bytes_sent`` is the sum of
the payload sizes of the completed messages (headers are not counted), and
in echo mode ``bytes_received == bytes_sent``.

Statistics are JSON lines on stdout, each starting with ``{"traffic":``
(the agent turns them into events): every ``stats_interval`` s and a last
one with ``"final": true`` when the run ends (duration, message count,
SIGTERM/SIGINT). Nothing else goes to stdout.
"""

from __future__ import annotations

STATS_PREFIX = '{"traffic":'
MODES = ("echo", "sink")
#: pkg name -> role
ROLES = {"traffic_server": "server", "traffic_client": "client"}
#: exit status for a bad command line or config
EXIT_USAGE = 2


class TrafficConfigError(ValueError):
    """A traffic config or distribution is unusable; the message names the key."""
