"""The MaLSAMi distributor's shipped monitors (``distributor.monitors``)."""
