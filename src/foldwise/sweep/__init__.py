"""The cross-validation sweep, one direction: plan → launch → engine → record → wrap-up.

* :mod:`.session` — :func:`~.session.begin` expands ``sweep.grid`` (Hydra's override
  grammar: lists, ``range(...)``, ``choice(...)``) into configurations, opens their MLflow
  runs, and groups the (configuration, fold) tasks that still need training into
  *stacks*: tasks that share an architecture train together as one stacked model in the
  many-models engine (:mod:`foldwise.engine`).
* :mod:`.finish` — :func:`~.finish.train` has Hydra launch one job per stack
  (``+stack=0,1,...``) with the configured launcher (basic: one process; joblib: parallel
  workers; submitit_local / submitit_slurm: a process / a SLURM array task per stack,
  see :mod:`.launch` and :mod:`.workers`); :func:`~.finish.wrap_up` closes the runs.
* :mod:`.jobs` — each job calls :func:`~.jobs.run_stack`, which trains and records.
* :mod:`.study` and :mod:`.optuna` — ``sweep=optuna``: the same plan, grown trial by trial.

The contract between the pieces is the session file ``results/sweep/session.json``
written by :func:`~.session.begin` (the plan, the stacks, the MLflow run ids) and one
result file per (configuration, fold) under ``results/sweep/jobs/`` (:mod:`foldwise.results`).
A result whose *job key* — a hash of the configuration, the fold, the split, foldwise's
own code and the engine version — matches is skipped, so an interrupted sweep resumes
where it stopped; a model's result does not depend on which stack, process or machine
trained it.
"""
