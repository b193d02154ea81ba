"""Shared test helpers: builders for OTLP messages (:mod:`tests.utils.otlp_factory`)."""
