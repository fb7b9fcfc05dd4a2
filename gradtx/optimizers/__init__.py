"""Ready optimizers, each a short named chain of primitives, one module per family.

Every optimizer keeps optax's name, argument names, defaults and update rule;
where gradtx differs (``adadelta``'s default learning rate) its docstring says
so, and each docstring says where torch.optim's convention differs.
"""

from gradtx.optimizers.adaptive import *  # noqa: F401,F403
from gradtx.optimizers.adaptive import __all__ as _adaptive
from gradtx.optimizers.classic import *  # noqa: F401,F403
from gradtx.optimizers.classic import __all__ as _classic
from gradtx.optimizers.large_batch import *  # noqa: F401,F403
from gradtx.optimizers.large_batch import __all__ as _large_batch
from gradtx.optimizers.misc import *  # noqa: F401,F403
from gradtx.optimizers.misc import __all__ as _misc
from gradtx.optimizers.second_order import *  # noqa: F401,F403
from gradtx.optimizers.second_order import __all__ as _second_order
from gradtx.optimizers.sign import *  # noqa: F401,F403
from gradtx.optimizers.sign import __all__ as _sign

__all__ = [*_adaptive, *_classic, *_large_batch, *_misc, *_second_order, *_sign]
