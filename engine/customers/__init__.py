"""Customers and what they say: importing customers and events (`importing`), their own choices
in the preference centre (`preferences`), suppressed addresses (`suppressions`), the sample
store of the demo (`demo_data`) and churn risk learned from the store's history (`risk`).

May import: `engine.config`, `engine.store`, `engine.campaigns`, `engine.errors`, `engine.clock`."""
