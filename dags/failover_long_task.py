"""A long task, then a short one: the DAG of the scheduler failover drill.

The drill kills the scheduler whose executor launched ``hold`` while it sleeps; the other
scheduler must adopt the worker pod, see it finish, delete it, and run ``after_hold``.
Any DAG runs through the smoke flow, this one too::

    invoke smoke --dag-id failover_long_task --conf '{"seconds": 10}'
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task


@dag(
    dag_id="failover_long_task",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["smoke"],
    params={"seconds": Param(60, type="integer", minimum=0, maximum=3600)},
)
def failover_long_task() -> None:
    @task
    def hold(params: dict[str, Any] | None = None) -> int:
        seconds = int((params or {}).get("seconds", 60))
        print(f"holding for {seconds} s")
        time.sleep(seconds)
        return seconds

    @task
    def after_hold(held: int) -> None:
        print(f"ran after a task that held for {held} s")

    after_hold(hold())


failover_long_task()
