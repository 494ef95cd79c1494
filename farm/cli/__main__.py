"""``python -m farm.cli``: the ``farm`` command."""

from farm.cli.root import main

main(prog_name="farm")
