"""The store: the tables (`tables`), every difference between SQLite and PostgreSQL (`dialect`),
schema migrations through Alembic (`schema`, `migrations/`) and the counts the database keeps
for the report (`tallies`).

May import: `engine.errors`, `engine.clock`. It knows nothing of campaigns or mail."""
