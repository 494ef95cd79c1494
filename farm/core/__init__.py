"""The farm core: the Distributor, its slots, submissions, journal and failure policy.

Deliberately imports nothing: ``farm.core.records`` (SetState, RunRecord) is
used by monitors and reports, which must not pull in the whole core.
See docs/architecture.md for how the modules fit together.
"""
