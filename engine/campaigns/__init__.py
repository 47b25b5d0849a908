"""The campaign language (`language`: the YAML marketers write, as pydantic models) and what it
means against the store: audiences compiled to SQL (`conditions`), stage and risk defined once
(`measures`), and stable holdout and variant shares (`assignment`).

May import: `engine.config`, `engine.store`, `engine.errors`, `engine.clock`. Reads only."""
