"""The final model in MLflow's model registry.

When the test stage opens the lockbox, the pyfunc model the refit run logged for that
model (:mod:`foldwise.pyfunc`) becomes a version of the registered model
``lockbox.registered_model`` (default ``foldwise-<data.name>``), with alias
``champion`` and tags saying what it is (configuration, CV and test scores, look,
commit). Never before: a version exists only for a model whose test score is known.

One version per model (weight fingerprint): re-running the test stage on it adds none.
The alias follows the latest opening; a repeat of an earlier model's opening (its
recorded result reported again) registers it if it is missing but leaves ``champion``
where it is, unless there is none yet.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

ALIAS = "champion"
TAG = "foldwise."


def model_name(cfg: DictConfig) -> str:
    name = OmegaConf.select(cfg, "lockbox.registered_model")
    return str(name) if name is not None else f"foldwise-{cfg.data.name}"


def _versions(c: Any, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return list(c.search_model_versions(f"name = '{name}'", max_results=10000))
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise


def _champion(c: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(c.get_model_version_by_alias(name, ALIAS).version)
    except MlflowException:
        return None


def champion(tracking_uri: str, name: str) -> Any | None:
    """The version ``name@champion`` in the store at ``tracking_uri``; None when there is
    no such model or alias, the store is a SQLite file not yet created (asking would
    create it), or a server does not answer at once (one quick try)."""
    from pathlib import Path

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from foldwise.tracking import env_vars

    if (
        tracking_uri.startswith("sqlite:///")
        and not Path(tracking_uri.removeprefix("sqlite:///")).is_file()
    ):
        return None
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    try:
        with env_vars(quick):
            return MlflowClient(tracking_uri).get_model_version_by_alias(name, ALIAS)
    except (MlflowException, OSError):
        return None


def description(entry: dict[str, Any], metric: str) -> str:
    """The model version's description: its CV and test scores, each at the precision
    its interval supports (:mod:`foldwise.headline`; the tags keep full precision)."""
    from foldwise import headline

    s = entry["scores"].get(metric.removeprefix("val_"), {})
    c = entry.get("cv") or {}
    cv_text = (
        "n/a"
        if c.get("mean") is None
        else headline.near(c["mean"], c.get("ci_low"), c.get("ci_high"))
    )
    test_text = (
        "n/a"
        if s.get("value") is None
        else headline.near(s["value"], s.get("ci_low"), s.get("ci_high"))
    )
    return (f"{entry['label']} ({entry['model_sha256'][:12]}): CV {metric} {cv_text}, test "
            f"{test_text} (lockbox look #{entry['look']}, {entry['opened_at']}).")  # fmt: skip


def register(
    cfg: DictConfig, info: dict[str, Any], entry: dict[str, Any], metric: str, *, opened: bool
) -> dict[str, Any]:
    """Register the refit run's pyfunc for the model of ``entry`` (an audit entry; ``info``
    is ``models/final/info.json``); ``opened``: the lockbox was opened for it just now
    (the alias moves to it) rather than its recorded result reported again. Returns
    ``{"name", "version", "alias", "new"}``; ``alias`` is None when ``champion`` stayed."""
    import mlflow

    from foldwise import tracking

    c = tracking.client(cfg)
    name = model_name(cfg)
    fp = entry["model_sha256"]
    same = [v for v in _versions(c, name) if v.tags.get(f"{TAG}model_sha256") == fp]
    test = entry["scores"].get(metric.removeprefix("val_"), {}).get("value")
    cv = (entry.get("cv") or {}).get("mean")
    tags = {
        "label": entry["label"],
        "config_hash": entry["config_hash"],
        "model_sha256": fp,
        "test_sha256": entry["test_sha256"],
        "look": entry["look"],
        "reused_test_set": entry["reused_test_set"],
        "git_commit": entry.get("git_commit"),
        "refit": entry.get("refit", "all_dev"),
        "refit_run_id": info["mlflow_run_id"],
        "lockbox_run_id": entry.get("mlflow_run_id"),
        "metric": metric,
        f"cv_{metric}": cv,
        f"test_{metric.removeprefix('val_')}": test,
    }
    tags = {f"{TAG}{k}": str(v) for k, v in tags.items() if v is not None}
    about = description(entry, metric)
    new = not same
    if same:
        first = min(same, key=lambda v: int(v.version))
        version = str(first.version)
        # the same model opened on another test set (lockbox.test_rows=new): its latest
        # opening is what the version's tags describe
        if opened and first.tags.get(f"{TAG}test_sha256") != entry["test_sha256"]:
            for k, v in tags.items():
                c.set_model_version_tag(name, version, k, v)
            c.update_model_version(name, version, about)
    else:
        mlflow.set_tracking_uri(c.tracking_uri)
        # the logged model's own URI; a bundle refit before it was recorded: its run's
        source = info.get("mlflow_model_uri") or f"runs:/{info['mlflow_run_id']}/model"
        version = str(mlflow.register_model(source, name, tags=tags).version)
        c.update_model_version(name, version, about)
    alias = None
    if opened or _champion(c, name) is None:
        c.set_registered_model_alias(name, ALIAS, version)
        alias = ALIAS
    return {"name": name, "version": version, "alias": alias, "new": new}
