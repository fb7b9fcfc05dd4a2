r"""Loss functions: optax's, under the same names, arguments and defaults.

``gradtx.losses.<name>`` takes the same arguments as ``optax.losses.<name>``
(and ``optax.<name>``) and returns the same values, so training code written
for optax keeps working when the import changes. Every function is a pure
function of arrays: it runs under ``jax.jit``, ``jax.vmap`` and ``jax.grad``,
and has no state and no hyperparameters to hold (a loss is not a stage).

Conventions shared by all losses:

* **Dtype.** The result has the floating dtype of the first argument
  (``logits``, ``predictions``, ``scores``, ...); labels and targets are cast
  to it. 16-bit inputs (bfloat16, float16) are computed in float32 and
  rounded once at the end wherever the loss takes an ``exp``, a ``log`` or a
  sum, so a bfloat16 model gets a float32-accurate loss (optax computes in
  bfloat16).
* **Reductions.** A loss reduces only over its class / feature axis
  (``axis``, default the last); the batch is never averaged unless the loss
  says so (``ntxent``, ``ranking_softmax_loss``, the dice losses), exactly
  as in optax. ``where`` masks elements out of that reduction.
* **Bad input** raises at once: a non-floating ``logits`` array raises
  ``TypeError``, and so does a floating label array for
  :func:`softmax_cross_entropy_with_integer_labels` and the CTC losses (the
  multiclass margin losses take whole-number floats as class indices, as
  optax does; a fraction there names no class and gives NaN); mismatched
  shapes raise ``ValueError``; an out-of-range hyperparameter given as a
  Python number raises :class:`gradtx.errors.HyperparameterError` naming the
  loss, the argument and its allowed range.
* **Class labels.** Every loss that takes integer class labels
  (:func:`softmax_cross_entropy_with_integer_labels`,
  :func:`multiclass_hinge_loss`, :func:`multiclass_perceptron_loss`,
  :func:`multiclass_sparsemax_loss`, :func:`ctc_loss`,
  :func:`ctc_loss_with_forward_probs`) reads a label as a numpy index into
  its ``K`` classes: ``[0, K)``, or ``[-K, 0)`` counting from the end. A
  label that names no class (outside ``[-K, K)``, a fractional float label,
  the blank as a CTC label) gives its example a NaN loss and a zero
  gradient, eagerly and under ``jax.jit`` alike: bad data shows in the loss
  and trains nothing, where optax gives several of these a plausible finite
  loss. Labels are not read back to raise an error: under ``jit`` they are
  traced, and eagerly the check would cost a device sync per call. To leave
  examples out (padding, torch's ``ignore_index``) mask them: ``where`` of
  :func:`softmax_cross_entropy_with_integer_labels` (a row it leaves out is
  0 whatever its label), the CTC losses' ``label_paddings``, or
  ``jnp.where(mask, loss, 0)`` on the result (not ``loss * mask``: NaN
  times 0 is NaN).
* **Zero times infinity.** A term :math:`0 \log 0` is 0, and so is its
  gradient, wherever the convention applies: a class masked with a ``-inf``
  logit and a zero label, a zero target in a KL divergence, a zero-norm
  vector in a cosine similarity. optax returns NaN for several of these
  (values or gradients); each function's docstring says which under
  *Differences from optax*.
"""

from __future__ import annotations

# One private module per role; this namespace re-exports their public names. The
# imports follow the roles' order, which is the order of the losses page in the docs.
from gradtx.losses._regression import (
    squared_error, l2_loss, huber_loss, log_cosh, cosine_similarity, cosine_distance)
from gradtx.losses._classification import (
    smooth_labels, softmax_cross_entropy, safe_softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels, sigmoid_binary_cross_entropy, sigmoid_focal_loss,
    poly_loss_cross_entropy, hinge_loss, perceptron_loss, multiclass_hinge_loss,
    multiclass_perceptron_loss)
from gradtx.losses._divergences import (
    kl_divergence, kl_divergence_with_log_targets, generalized_kl_divergence,
    convex_kl_divergence)
from gradtx.losses._self_supervised import triplet_margin_loss, ntxent
from gradtx.losses._fenchel_young import (
    make_fenchel_young_loss, sparsemax_loss, multiclass_sparsemax_loss)
# The type of make_fenchel_young_loss's argument, for annotations (not in optax, nor __all__).
from gradtx.losses._fenchel_young import MaxFun as MaxFun
from gradtx.losses._ranking import ranking_softmax_loss
from gradtx.losses._segmentation import (
    dice_loss, binary_dice_loss, multiclass_generalized_dice_loss)
from gradtx.losses._ctc import ctc_loss_with_forward_probs, ctc_loss

__all__ = [
    "l2_loss",
    "squared_error",
    "huber_loss",
    "log_cosh",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "smooth_labels",
    "cosine_similarity",
    "cosine_distance",
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "generalized_kl_divergence",
    "convex_kl_divergence",
    "hinge_loss",
    "multiclass_hinge_loss",
    "perceptron_loss",
    "multiclass_perceptron_loss",
    "poly_loss_cross_entropy",
    "triplet_margin_loss",
    "ntxent",
    "sparsemax_loss",
    "multiclass_sparsemax_loss",
    "make_fenchel_young_loss",
    "ranking_softmax_loss",
    "dice_loss",
    "binary_dice_loss",
    "multiclass_generalized_dice_loss",
    "ctc_loss_with_forward_probs",
    "ctc_loss",
]
