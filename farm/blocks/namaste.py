"""``namaste``: another greeting workload; exits at once."""

from __future__ import annotations

from farm.blocks._make import workload

Namaste = workload("namaste")
