"""Ready optimizers, each a short named chain of primitives, one module per family.

Every optimizer keeps optax's name, argument names, defaults and update rule;
where gradtx differs (``adadelta``'s default learning rate) its docstring says
so, and each docstring says where torch.optim's convention differs.
"""

from gradtx.optimizers.classic import *  # noqa: F401,F403
from gradtx.optimizers.classic import __all__ as _classic

__all__ = [*_classic]
