"""How `pytest -n 2 --dist loadgroup` (``make test``) shares the suite between workers.

1. ``xdist_group`` marks are honoured. pytest-xdist 3.8 tags a grouped test by setting
   ``item._nodeid``, which pytest 9 no longer reads (a node id is ``item._id`` now): the
   marks did nothing, so the tests of one group ran on both workers and each worker
   built the group's module fixtures (a SLURM cluster, a reference sweep...) again. The
   hook below appends ``@group`` to the id where it belongs (once: a later xdist that
   does it itself is left alone).
2. The longest work goes out first. The scheduler hands out work units in collection
   order (``--no-loadscope-reorder``: xdist's own reorder, by the number of tests in a
   unit, would put a group of quick unit tests before a 2-minute pipeline run), so the
   items are sorted by an estimate of their unit's seconds, longest first: both
   workers stay busy to the end instead of one finishing a long run alone.

The estimates only order the work; a test missing from ``SECONDS`` counts as quick (or as
``SLOW_DEFAULT`` if marked slow). Nothing here skips or changes a test.
"""

from __future__ import annotations

import pytest
from _pytest.nodeid import NodeId

# Rough seconds per test on 2 busy cores (`--durations`), by the start of its id
# ("file::test[params]", "file::test" for every parameter, or a shorter start); the
# longest start that matches counts. Only the order matters: longest first.
SECONDS: dict[str, float] = {
    "test_pipeline_e2e.py::test_repro_sqlite_then_lockbox_rules": 400,
    "test_nested_e2e.py::test_nested_cv_end_to_end": 15,
    "test_baseline_selection.py::test_a_selected_baseline_is_refit_tested_once_and_served": 35,
    "test_thresholdout_e2e.py::test_thresholdout_answers_within_its_budget_then_refuses": 35,
    "test_queue_e2e.py::test_queued_experiments": 240,
    "test_ensemble_e2e.py::test_single_bagged_and_boosted_side_by_side": 25,
    "test_pipeline_e2e.py::test_dvc_exp_run_temp_composes_conf_and_shares_store_and_lockbox": 150,
    "test_report_e2e.py::test_preview_before_the_lockbox_then_the_stage_after_it": 150,
    "test_report_e2e.py::test_a_real_browser_renders_it_without_errors": 10,
    "test_mlflow_ui.py::test_a_real_browser_opens_the_runs_table": 25,  # + the server
    "test_schemes_e2e.py::test_scheme_end_to_end[bootstrap]": 15,
    "test_schemes_e2e.py::test_scheme_end_to_end[time_series]": 15,
    "test_schemes_e2e.py::test_scheme_end_to_end": 25,  # the others: in-process stages
    "test_schemes_e2e.py::test_the_time_estimate_is_not_wildly_off_the_training_time": 30,
    "test_regression_e2e.py::test_diabetes_regression_end_to_end": 15,
    "test_own_model.py::test_a_users_package_is_cross_validated": 160,
    "test_sources.py::test_an_image_folder_is_cross_validated_by_dvc_repro": 90,
    "test_feed.py::test_the_sweep_stage_streams": 35,
    "test_docs.py::test_example_runs": 3,  # a bash script in a copy of the project (~30 s in all)
    "test_slurm_e2e.py::test_slurm_sweep_equals_the_local_one_and_resumes_after_scancel": 140,
    "test_slurm_e2e.py::test_submitit_local_runs_a_process_per_stack_with_the_same_results": 45,
    "test_pipeline_e2e.py::test_repro_against_mlflow_server": 20,
    "test_stack_property.py::test_a_models_result_never_depends_on_its_stack": 120,
    "test_postgres_server_e2e.py::test_parallel_sweep_through_postgres_backed_server": 110,
    "test_optuna_sweeper.py::test_pruning_saves_fold_jobs": 95,
    "test_leakage_e2e.py::test_test_row_values_reach_nothing_before_the_test_stage": 80,
    "test_faults_e2e.py::test_kill_9_of_joblib_workers_one_or_all_then_resume": 80,
    "test_faults_e2e.py::test_two_sweeps_on_one_server_at_once_never_mix_runs": 45,
    "test_faults_e2e.py::test_ctrl_c_in_dvc_exp_run_closes_runs_and_the_rerun_resumes": 40,
    "test_faults_e2e.py::test_kill_9_of_a_basic_sweep_at_random_points_then_resume": 30,
    "test_faults_e2e.py::test_a_second_dvc_repro_is_refused_by_dvcs_lock": 10,
    "test_sweep.py::test_stacked_and_one_at_a_time_sweeps_give_the_same_results": 50,
    "test_sweep.py::test_going_back_to_an_earlier_grid_reuses_cached_jobs": 40,
    "test_sweep.py::test_joblib_launcher_runs_every_job_in_parallel_workers": 40,
    "test_sweep.py::test_ctrl_c_keeps_finished_models": 40,
    "test_sweep.py::test_interrupted_sweep_reruns_only_missing_jobs": 30,
    "test_sweep.py::test_failed_job_is_isolated_and_its_configuration_cannot_be_selected": 25,
    "test_faults.py::test_server_gone_mid_sweep_keeps_results_and_sync_uploads_them": 60,
    "test_faults.py::test_models_that_raise_run_out_of_memory_or_diverge_fail_alone": 50,
    "test_faults.py::test_processes_creating_one_new_sqlite_store_at_once_all_get_it": 30,
    "test_faults.py::test_sigterm_then_a_resume_after_dvc_put_back_an_older_session": 25,
    "test_engine.py::test_stack_equals_independent_reference_in_float64": 15,
    "test_devices.py": 25,
    "test_host_syncs.py::test_no_training_step_of_a_random_stack_syncs": 10,
    "test_optuna_sweeper.py::test_exhaustive_search_finds_the_grids_best": 30,
    "test_optuna_sweeper.py::test_postgresql_storage_and_resume": 30,
    "test_registry.py::test_test_stage_registers_the_opened_model_and_mlflow_serves_it": 25,
    "test_ncv.py::test_naive_cv_under_covers_where_nested_cv_does_not": 8,
    "test_ncv_e2e.py::test_ncv_interval_end_to_end": 30,  # each of 2
}
SLOW_DEFAULT = 15.0


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # xdist installed
        config.option.loadscopereorder = False


def _group(item: pytest.Item) -> str | None:
    names = sorted(
        {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
         for m in item.iter_markers("xdist_group")}
    )  # fmt: skip
    return "_".join(names) or None


def _estimate(item: pytest.Item) -> float:
    key = item.nodeid.split("@")[0].removeprefix("tests/")
    starts = [k for k in SECONDS if key.startswith(k)]
    if starts:
        return SECONDS[max(starts, key=len)]
    return SLOW_DEFAULT if item.get_closest_marker("slow") else 0.1


@pytest.hookimpl(trylast=True)  # after xdist's own (ineffective) renaming
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    loadgroup = bool(getattr(config.option, "loadgroup", False))
    unit_of: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for item in items:
        group = _group(item)
        if loadgroup and group and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{group}")
        unit = group or item.nodeid
        unit_of[item.nodeid] = unit
        seconds[unit] = seconds.get(unit, 0.0) + _estimate(item)
    if not hasattr(config, "workerinput"):  # not an xdist worker: file order, as written
        return
    first = {unit_of[item.nodeid]: i for i, item in reversed(list(enumerate(items)))}
    items.sort(key=lambda it: (-seconds[unit_of[it.nodeid]], first[unit_of[it.nodeid]]))
