"""Learning-rate and hyperparameter schedules.

A schedule is a plain function ``count -> value``: ``count`` is the number of
steps taken so far (a Python int or a JAX integer array, possibly traced under
``jax.jit``) and ``value`` is a JAX scalar array. Every factory here keeps
optax's name, argument names, defaults and values, so ``optax.<name>`` and
``gradtx.schedules.<name>`` are interchangeable.

Conventions shared by all schedules:

* **Validation.** Arguments are checked when the schedule is built; a bad one
  raises :class:`gradtx.errors.HyperparameterError` (a ``ValueError``) naming
  the schedule, the argument, its value and the allowed range. Step counts
  (``transition_steps``, ``decay_steps``, boundaries, ...) must be integers
  (an integral float such as ``1e5`` is accepted). An argument with a range
  (``decay_rate > 0``, a scale ``>= 0``, ``pct_start`` in [0, 1)) must also be
  finite. Values that are traced arrays cannot be checked and are taken as given.
* **Dtype.** The value has the floating dtype of the value arguments
  (``init_value``, ``peak_value``, ...): float32 by default, float64 under
  ``jax.enable_x64`` when they are Python floats, and an array's own dtype
  when one is given. Nothing is forced to float32; 16-bit values are computed
  in float32 and rounded once at the end.
* **Counts.** Integer counts stay integers until the fraction of a phase is
  taken, so boundaries are exact. A count below 0 is treated as 0, and an
  unsigned count as signed (where optax's ``uint32(4) - 5`` wraps around). A
  step past the count's range (an int32 count and a boundary of ``10**10``) is
  met in int64 under x64. Without x64, a transition that ends there (linear,
  polynomial, cosine, as in optax's ``cosine_decay_schedule``) takes its
  fraction in floating point, as no count reaches its end; a boundary there
  (piecewise, join, exponential's steps) raises ``OverflowError`` saying so.

Where gradtx differs from optax (only on inputs optax accepts but cannot use
well), the factory's docstring says so under *Differences from optax*.
"""

from __future__ import annotations

# One private module per role; this namespace re-exports their public names. The
# imports follow the roles' order: one phase, warmup then decay, pieces and joins, cycles.
# optax's type names (optax.schedules.Schedule); their page is gradtx's top level's.
from gradtx.core import ScalarOrSchedule as ScalarOrSchedule, Schedule as Schedule
from gradtx.schedules._basic import (constant_schedule, cosine_decay_schedule, exponential_decay,
                                     linear_schedule, polynomial_schedule)
from gradtx.schedules._warmup import (warmup_constant_schedule, warmup_cosine_decay_schedule,
                                      warmup_exponential_decay_schedule)
from gradtx.schedules._piecewise import (join_schedules, piecewise_constant_schedule,
                                         piecewise_interpolate_schedule)
from gradtx.schedules._cyclic import (cosine_onecycle_schedule, linear_onecycle_schedule,
                                      sgdr_schedule)

__all__ = [
    "constant_schedule",
    "linear_schedule",
    "polynomial_schedule",
    "exponential_decay",
    "cosine_decay_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "join_schedules",
    "sgdr_schedule",
    "cosine_onecycle_schedule",
    "linear_onecycle_schedule",
]
