"""The studies, one module each; importing registers them. ``ORDER`` is the order of
docs/evidence.md (and of ``weightshare study --help``)."""

from . import (  # noqa: F401 - each module registers its study
    convergence,
    expressiveness,
    hashing,
    limited_data,
    params,
    recurrence,
    training_speed,
)

ORDER = ("params", "limited-data", "training-speed", "convergence", "expressiveness",
         "recurrence", "hashing")
