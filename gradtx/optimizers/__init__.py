"""Ready optimizers, each a short named chain of primitives, one module per family.

Every optimizer keeps optax's name, argument names, defaults and update rule;
where gradtx differs (``adadelta``'s default learning rate) its docstring says
so, and each docstring says where torch.optim's convention differs.
"""

from gradtx.optimizers.adaptive import *  # noqa: F401,F403
from gradtx.optimizers.classic import *  # noqa: F401,F403
from gradtx.optimizers.large_batch import *  # noqa: F401,F403
from gradtx.optimizers.misc import *  # noqa: F401,F403
from gradtx.optimizers.second_order import *  # noqa: F401,F403
from gradtx.optimizers.sign import *  # noqa: F401,F403
from gradtx.optimizers import adaptive, classic, large_batch, misc, second_order, sign

# In the form type checkers read (mypy, pyright): `from gradtx.optimizers import *` and
# `gtx.adam` resolve statically.
__all__ = []
__all__ += adaptive.__all__
__all__ += classic.__all__
__all__ += large_batch.__all__
__all__ += misc.__all__
__all__ += second_order.__all__
__all__ += sign.__all__
