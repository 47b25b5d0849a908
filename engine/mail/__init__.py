"""One email for one customer: templates rendered per recipient (`rendering`), the context and
message of a campaign step (`compose`), the RFC 5322 bytes (`message`), signed links (`links`),
previews and test sends (`previews`) and the checks of `lifecycle validate` (`validation`).

May import: `engine.config`, `engine.store`, `engine.campaigns`, `engine.customers`, and
`engine.senders` for types only."""
