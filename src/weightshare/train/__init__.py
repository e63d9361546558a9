"""Training with sharing: distillation toward the original, a small seeded supervised
loop (``fit``, ``evaluate``), and the hooks (regularisers, step callbacks) that methods
training with sharing plug into."""

from .distill import distill_
from .hooks import Regularizer, StepCallback, StepInfo
from .loop import FitResult, evaluate, fit

__all__ = ["FitResult", "Regularizer", "StepCallback", "StepInfo", "distill_", "evaluate", "fit"]
