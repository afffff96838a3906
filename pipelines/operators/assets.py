"""Assets Tierflow DAGs produce and consume."""

from __future__ import annotations

from airflow.sdk import Asset

__all__ = ["PUBLISHED"]

#: A dataset version was committed on object storage (by preparation or `tierflow datasets publish`);
#: its event extras name the dataset and version. Staging is scheduled on it.
PUBLISHED = Asset(name="tierflow_dataset_published", uri="tierflow://object/datasets/published")
