"""The lockbox: the test set, opened once and audited.

* :mod:`.opening` — the test stage: decide whether this opening is allowed (a repeat, a
  new model on an opened test set, an override with a reason), score the refit model
  on the test rows with bootstrap intervals, and register the opened model.
* :mod:`.audit` — the append-only audit log in git (``lockbox/audit.jsonl``).
* :mod:`.ledger` — the records outside git (``.foldwise/lockbox/``) and their tamper
  checks against the audit log and MLflow; plans the split stage's test rows.
* :mod:`.rows` — which dataset rows each opening has seen (the row registry).
* :mod:`.thresholdout` — the opt-in reusable lockbox (``lockbox.mode=thresholdout``):
  Thresholdout's answers, its budget, its noise key and its guarantee.

One direction: opening → thresholdout, ledger → rows, audit. Importing this package loads
nothing (the split stage reads the records without the model code the opening needs).
"""
