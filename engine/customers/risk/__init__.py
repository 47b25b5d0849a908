"""Churn risk predicted from the store's own history (`risk: {model: predicted}`), and the rules'
thresholds calibrated from it: the features at a cut-off (`features`), the calibrated rule
thresholds (`calibration`), the signed, calibrated model and its scores (`model`), the backtest of
rules against model (`backtest`) and the runs of `lifecycle risk train` and the daemon (`training`).

Scores land in the table `customer_risk` (one row per customer: probability, colour, scored_at,
model_version), which the measures read for `{risk: ...}` under `model: predicted`; `scores_for`
reads them for a list of customers (`model.scores_for`).

The submodules are imported where they are used, not here: `calibration.apply_stored` runs for
every command, and scikit-learn takes a second to import.
"""
