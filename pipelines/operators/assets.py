"""Assets Tierflow DAGs produce and consume."""

from __future__ import annotations

from airflow.sdk import Asset

__all__ = ["PUBLISHED"]

#: A dataset version was committed on object storage (by preparation or `tierflow datasets publish`);
#: its event extras name the dataset and version. Staging is scheduled on it. Named only (its URI is
#: its name): a URI with a scheme makes Airflow load every provider's URI normalizers, which costs
#: each DAG file that imports this ~0.75 s per parse (``make bench BENCH=dag_parse``).
PUBLISHED = Asset(name="tierflow_dataset_published")
