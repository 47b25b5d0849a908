"""lifecycle: an automated lifecycle email engine.

The flow, one module a step: config -> store -> campaigns (the language) -> evaluation (entries)
-> ledger (sends) -> rendering -> senders -> scheduler (a tick). The command line (`cli`) calls
into these; none of them imports the command line.
"""
