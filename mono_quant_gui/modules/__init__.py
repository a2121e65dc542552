"""modules: see docs/architecture.md."""
