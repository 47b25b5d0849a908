"""The report: every figure counted in the database (`report`), printed as a table (`table`) or
an HTML page with charts (`html`), for `lifecycle report` and the dashboard; and one customer's
page (`timeline`), for `lifecycle customer` and the studio.

May import: `engine.config`, `engine.store`, `engine.campaigns`, `engine.customers` (choices, search),
`engine.delivery` (outcome names, statuses); never `engine.web` or `engine.cli`."""
