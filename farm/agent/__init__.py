"""farm's guest agent: runs task sets as real processes and streams their events.

Stdlib only (it ships in the guest initrd with a trimmed Python 3.11; the
same files run as a plain process on any Linux box). Needed stdlib pieces
beyond the core: ``resource``, ``selectors``/``select``, ``subprocess``
(``_posixsubprocess``), ``json``, SHA-256 (``_sha256``, own HMAC), ``base64``; ``ctypes``
is optional (SCHED_DEADLINE and PR_SET_PDEATHSIG need it).

Modules, one concept each:

* ``__main__``   command line, token, signals, port file
* ``server``     TCP listener, connection cap
* ``connection`` per-client handshake, framing, replies, events, heartbeats
* ``service``    ops (ping, time, status, start, stop, clear) and agent state
* ``taskspec``   validation of the host's task dicts
* ``runner``     scheduler thread of one task set (releases, exits -> events)
* ``spawner``    a launcher thread per task: spawns off the scheduler thread
* ``jobs``       one job process: spawn with limits, reap, output, exit kind
* ``pspawn``     posix_spawn through ctypes (policy, cwd, group set before exec)
* ``childsetup`` the preexec_fn for the other jobs (budget, quota, deadline)
* ``commands``   argv/env of a job: built-in, shell, uploaded binary
* ``binaries``   store of uploaded binaries
* ``sched``      SCHED_FIFO / SCHED_DEADLINE
* ``workloads``  the built-in workloads (a stand-alone script)
* ``cyclictest`` the ``cyclictest`` pkg: flags from the config, summary parsing
* ``logs``       loggers that hold records until ``logging`` is set up (fast start)
* ``protocol``   wire format shared with the host; ``pkgs`` known pkg names
* ``bootnet``    the guest's static address (farm.ip=) set by /init's python, ioctls
"""
