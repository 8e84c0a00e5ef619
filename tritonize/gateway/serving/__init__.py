"""Serving handlers: one class per API group, each calling one of the project's async clients."""
