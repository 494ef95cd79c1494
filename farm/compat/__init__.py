"""Compatibility layer: the seeds' task sets, monitors and scripts, import lines changed only.

``farm.compat.taskgen`` (argos-research/taskgen), ``farm.compat.malsami.taskgen``
(the malsami/taskgen fork), ``farm.compat.malsami`` (malsami/distributor's
``distributorClass``, ``monitor``, ``monitors``) and ``farm.compat.seer`` (SEER's
agent base). The original-shaped task sets are converted to farm task sets
(``farm.compat.convert``) and run by farm's own Distributor; no second engine.
See docs/compat.md for the name table and the originals' bugs not imitated.
"""
