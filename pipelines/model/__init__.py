"""The storage-bandwidth model: the planner (pure), calibration, observations and the cluster what-if."""
