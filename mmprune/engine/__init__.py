"""MMEngine glue: hooks, optimizer wrappers, loops, checkpoint loading."""
from . import adversarial, export, hooks, optimizers, report, runner  # noqa: F401
from .checkpoint import allow_mmengine_checkpoints

allow_mmengine_checkpoints()
