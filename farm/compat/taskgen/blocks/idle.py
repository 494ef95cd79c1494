"""``idle`` block (taskgen)."""

Idle = {"pkg": "idle", "quota": "1M"}
