"""Synchronised multi-host jobs (NetJobs, seed 003)."""
