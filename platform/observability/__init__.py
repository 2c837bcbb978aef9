"""Observability wiring: Sentry, structured logs, Prometheus metrics, health probes.

The settings import what they need from here in a few lines (`--- Observability ---`); the jobs
layer records its context and metrics through saas_platform.lib.telemetry and
saas_platform.lib.metrics, which sit below it.
"""
