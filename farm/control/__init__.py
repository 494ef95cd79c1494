"""A running Distributor's local control socket and its client (``farm status``).

The Distributor serves ``<state_dir>/control.sock`` (:mod:`farm.control.server`);
:class:`ControlClient` asks it (:mod:`farm.control.client`).
"""

from farm.control.client import ControlClient, ControlError, NoFarmRunning

__all__ = ["ControlClient", "ControlError", "NoFarmRunning"]
