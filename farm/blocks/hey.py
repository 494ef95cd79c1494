"""``hey``: prints a greeting and exits at once."""

from __future__ import annotations

from farm.blocks._make import workload

HelloWorld = workload("hey")
