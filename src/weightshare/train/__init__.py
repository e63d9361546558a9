"""Training with sharing: distillation toward the original, and the hooks (regularisers,
step callbacks) that methods training with sharing plug into."""

from .distill import distill_
from .hooks import Regularizer, StepCallback, StepInfo

__all__ = ["Regularizer", "StepCallback", "StepInfo", "distill_"]
