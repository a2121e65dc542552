"""dashboard: see docs/architecture.md."""
