"""taskgen's event handlers (``taskgen.events``)."""
