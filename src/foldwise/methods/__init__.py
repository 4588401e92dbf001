"""Methods: how the outcomes of many resamples become the numbers a user reads.

Each module holds pure summary functions over result dicts (what a task's result file
holds), so tests can call them on hand-made outcomes:

- :mod:`~foldwise.methods.resampling`: per kind of scheme — t over disjoint folds,
  Nadeau–Bengio over overlapping resamples, pooled predictions for exhaustive schemes,
  a row bootstrap for a single holdout.
- :mod:`~foldwise.methods.bootstrap632`: Efron & Tibshirani's leave-one-out bootstrap,
  .632 and .632+ estimates.
- :mod:`~foldwise.methods.optimism`: Tibshirani & Tibshirani's (2009) bias of the winner's
  CV score, from the configuration × fold score matrix.
"""
