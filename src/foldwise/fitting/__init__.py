"""Fitting models outside the sweep's bookkeeping: what one fit is (:mod:`.configs`) and
how configurations become engine tasks and train (:mod:`.train`). Shared by the sweep,
nested CV, the curves and the refit; it knows nothing of MLflow or session files."""
