"""Integrations with other frameworks, each an optional extra; nothing here is imported by the core."""
