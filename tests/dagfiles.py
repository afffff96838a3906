"""A user's DAG file loaded as the DAG processor would, so ``dag.test()`` can run it (it runs serialized DAGs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_dag_file(path: Path, dag_id: str) -> Any:
    """Parse ``path`` into a DagBag (no import errors allowed), write it to the metadata DB, return ``dag_id``."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(path), safe_mode=False)
    assert bag.import_errors == {}, bag.import_errors
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.get_dag(dag_id)
