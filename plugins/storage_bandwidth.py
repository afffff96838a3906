"""The storage-bandwidth plugin, for Airflow deployments that use this plugins folder.

Installing the ``tierflow`` package registers the same plugin through the ``airflow.plugins``
entry point; then this module stays empty, because Airflow reports a plugin registered twice as
an import error. The implementation is :mod:`pipelines.operators.plugin`.
"""

from __future__ import annotations

from importlib.metadata import entry_points

if not any(ep.value.startswith("pipelines.operators.plugin") for ep in entry_points(group="airflow.plugins")):
    from pipelines.operators.plugin import StorageBandwidthPlugin

    __all__ = ["StorageBandwidthPlugin"]
