"""Settings: `config.yaml` as pydantic models (`settings`), the YAML loader that keeps every
node's line and column so each mistake is reported as `file:line:col` (`source`), and durations.

May import: `engine.errors`. Everything else may import this package."""
