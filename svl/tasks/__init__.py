"""Tasks: one module per job (its config dataclass + a `Task` recipe), all run by `run_task` on the
shared `Trainer`. Importing this package registers the built-in tasks; others plug in through the
"svl.tasks" entry-point group. See docs/DESIGN.md ("Add a task").
"""

from svl.tasks import align, detect, distill, events, finetune, language, pretrain, segment  # noqa: F401  (registers the built-in tasks)
from svl.tasks.base import (
    TASKS,
    ModelSection,
    Task,
    TrainParts,
    load_task_config,
    register_task,
    run_task,
    write_results,
)

__all__ = [
    "TASKS",
    "ModelSection",
    "Task",
    "TrainParts",
    "load_task_config",
    "register_task",
    "run_task",
    "write_results",
]
