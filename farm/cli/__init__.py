"""The ``farm`` command line: one module per command group, errors mapped in :mod:`.errors`.

Only this package turns errors into exit codes; the library raises
:class:`farm.errors.FarmError` and never exits. The entry point is
``farm = "farm.cli:main"``.
"""

from farm.cli.root import main

__all__ = ["main"]
