"""Time and orchestration, generator-agnostic; importable without torch."""
