"""A running Distributor's local control socket and its client (``farm status``)."""
