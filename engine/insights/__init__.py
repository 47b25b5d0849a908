"""The report: every figure counted in the database (`report`), printed as a table (`table`) or
an HTML page with charts (`html`), for `lifecycle report` and the dashboard.

May import: `engine.config`, `engine.store`, `engine.campaigns`, `engine.delivery` (outcome names);
never `engine.web` or `engine.cli`."""
