"""malsami/distributor (``distributorClass``, ``monitor``, ``monitors``) and the malsami/taskgen
fork (``farm.compat.malsami.taskgen``), see docs/compat.md."""
