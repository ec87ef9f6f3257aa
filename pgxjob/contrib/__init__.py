"""Integrations with frameworks: each module imports its framework, which is an optional extra."""
