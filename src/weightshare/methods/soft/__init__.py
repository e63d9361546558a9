"""Soft weight sharing: a learned Gaussian-mixture prior pulls weights to a few shared
values during training (``SoftSharingPrior``, a regulariser for ``train.fit``); at the
end ``soft_to_codebook_`` turns them into zero-sharing codebook weights."""

from .harden import HardenZero
from .prior import AnnealPrior, SoftSharingPrior
from .snap import soft_to_codebook_

__all__ = ["AnnealPrior", "HardenZero", "SoftSharingPrior", "soft_to_codebook_"]
