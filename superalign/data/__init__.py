"""Tasks: the registry, offline data, local files and hub data sets, and splits."""

from superalign.data.registry import TaskSpec, list_tasks, load_task, register_task
from superalign.data.splits import Splits, make_splits
from superalign.data.task import TaskData

__all__ = ["TaskData", "TaskSpec", "Splits", "list_tasks", "load_task", "make_splits", "register_task"]
