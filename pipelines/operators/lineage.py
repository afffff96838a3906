"""Lineage outside Airflow's assets: MLflow (opt-in, ``[lineage]`` in the tier config) and OpenLineage.

* **MLflow** (``pip install tierflow[mlflow]``): each committed dataset version is logged as an
  MLflow dataset input — name ``<dataset>/<version>``, digest the manifest checksum, source the URL
  of the tier it was committed on — to a run of its own in ``mlflow_experiment`` (one run per
  version, found again by its tags, so the copies on other tiers join it as tags
  ``tierflow.uri.<tier>``). A promoted checkpoint is tagged on the training run it belongs to
  (``tierflow.checkpoint.<name>.<tier>`` = its URL, with its step and manifest checksum) when the
  task knows that run's id.
* **OpenLineage**: staging and promotion report each hop's source and destination URLs to Airflow's
  hook lineage collector, which the OpenLineage provider (when installed) sends as the task's
  inputs and outputs.

A reporting failure is logged as a warning and never fails the copy it reports.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.core.config import LineageConfig, TierflowConfig

__all__ = ["checkpoint_promoted", "dataset_committed", "hook_lineage", "report_checkpoint", "report_dataset"]

log = logging.getLogger(__name__)

#: Tag keys of the MLflow run a dataset version is logged to.
DATASET_TAG = "tierflow.dataset"
VERSION_TAG = "tierflow.version"


def _client(config: LineageConfig) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ImportError("[lineage] mlflow_tracking_uri needs MLflow: pip install 'tierflow[mlflow]'") from None
    return MlflowClient(tracking_uri=config.mlflow_tracking_uri)


def dataset_committed(
    config: LineageConfig | None, dataset: str, version: str, manifest_checksum: str, tier: str, url: str
) -> str | None:
    """Log a dataset version committed on ``tier`` (at ``url``) to MLflow; returns the MLflow run id.

    The first tier a version is committed on logs the dataset input; later tiers add their URL as a
    tag of the same run. Nothing happens (None) without ``[lineage]``.
    """
    if config is None:
        return None
    try:
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        client = _client(config)
        experiment = client.get_experiment_by_name(config.mlflow_experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(config.mlflow_experiment)
        query = f"tags.`{DATASET_TAG}` = '{dataset}' and tags.`{VERSION_TAG}` = '{version}'"
        found = client.search_runs([experiment_id], filter_string=query, max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:
            run = client.create_run(
                experiment_id,
                run_name=f"{dataset}/{version}",
                tags={DATASET_TAG: dataset, VERSION_TAG: version, "tierflow.manifest_checksum": manifest_checksum},
            )
            run_id = run.info.run_id
            entity = MetaDataset(  # type: ignore[abstract]  # concrete at run time
                source=resolve_dataset_source(url), name=f"{dataset}/{version}", digest=manifest_checksum
            )._to_mlflow_entity()
            client.log_inputs(run_id, [DatasetInput(entity, [InputTag("mlflow.data.context", "tierflow")])])
            client.set_terminated(run_id)
        client.set_tag(run_id, f"tierflow.uri.{tier}", url)
        return str(run_id)
    except Exception as exc:  # reporting never fails the copy it reports
        log.warning("lineage: could not log %s/%s to MLflow: %s", dataset, version, exc)
        return None


def checkpoint_promoted(
    config: LineageConfig | None,
    training_run_id: str | None,
    name: str,
    step: int,
    tier: str,
    url: str,
    manifest_checksum: str | None,
) -> bool:
    """Tag a checkpoint committed on ``tier`` on its MLflow training run; returns whether it was logged."""
    if config is None or not training_run_id:
        return False
    try:
        client = _client(config)
        prefix = f"tierflow.checkpoint.{name}"
        client.set_tag(training_run_id, f"{prefix}.{tier}", url)
        client.set_tag(training_run_id, f"{prefix}.step", str(step))
        if manifest_checksum:
            client.set_tag(training_run_id, f"{prefix}.manifest_checksum", manifest_checksum)
        return True
    except Exception as exc:  # reporting never fails the promotion it reports
        log.warning("lineage: could not tag checkpoint %s on MLflow run %s: %s", name, training_run_id, exc)
        return False


def hook_lineage(reporter: Any, source_url: str | None, target_url: str) -> None:
    """Report one hop to Airflow's hook lineage collector (sent by the OpenLineage provider, if installed).

    Args:
        reporter: What did the copy (the operator), as the collector keys what it collects.
        source_url: Where the bytes came from (None: from a local build, not a tier).
        target_url: Where they were committed.
    """
    try:
        from airflow.sdk.lineage import get_hook_lineage_collector

        collector = get_hook_lineage_collector()
        if source_url:
            collector.add_input_asset(reporter, uri=source_url)
        collector.add_output_asset(reporter, uri=target_url)
    except Exception as exc:  # reporting never fails the copy it reports
        log.warning("lineage: could not report %s -> %s: %s", source_url, target_url, exc)


def report_dataset(
    reporter: Any, config: TierflowConfig, source: Any, target: Any, dataset: str, version: str, manifest_checksum: str
) -> None:
    """A dataset version committed on ``target`` (copied from ``source``, a tier or None): OpenLineage and MLflow."""
    from pipelines.core.manifest import dataset_prefix

    prefix = dataset_prefix(dataset, version)
    url = target.url(prefix)
    hook_lineage(reporter, source.url(prefix) if source is not None else None, url)
    dataset_committed(config.lineage, dataset, version, manifest_checksum, target.name, url)


def report_checkpoint(
    reporter: Any, config: TierflowConfig, result: Any, source: Any, target: Any, training_run_id: str | None
) -> None:
    """A checkpoint promoted from ``source`` to ``target`` (``result``: a PromoteResult): OpenLineage and MLflow."""
    from pipelines.checkpoints.discovery import ROOT
    from pipelines.storage.commit import read_marker

    prefix = f"{ROOT}/{result.run}/{result.name}"
    url = target.url(prefix)
    hook_lineage(reporter, source.url(prefix), url)
    if config.lineage is not None and training_run_id:
        committed = read_marker(target, prefix)
        checksum = committed.manifest.checksum() if committed is not None else None
        checkpoint_promoted(config.lineage, training_run_id, result.name, result.step, target.name, url, checksum)
