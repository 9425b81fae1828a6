"""Mutual-information lower bounds as pure tensor functions (DIM section 3.1).

Every estimator reads one score tensor that holds every (global, local) pair
of a batch::

    scores[i, j, l] = T(global feature of sample i, local feature l of sample j)

with shape ``[B, B, L]``.  Positive pairs (drawn from the joint) sit on the
image diagonal ``i == j``; every off-diagonal entry pairs a global feature with
a local feature of another image, i.e. a sample from the product of marginals.
``L`` is the number of locations (M x M for the local objective, 1 for the
global objective or for plain vector pairs).  Following the paper's sampling
strategy (section 3.1, "We generate negative samples using all combinations of
global and local features at all locations of the relevant feature map, across
all images in a batch") each positive is contrasted with the local features of
the *other* images at *all* locations.

Every bound takes an optional ``negative_mask``: a ``[B, B]`` 0/1 matrix whose
row ``i`` marks the images ``j`` whose local features (at all locations) are
negatives of global feature ``i``.  ``None`` (the default) means every other
image, the computation above, unchanged; the diagonal of a mask is ignored
(a positive is never a negative).  :func:`sample_negative_mask` draws the
mask of DIM's App. A.3 / Fig. 9 experiment: ``K`` random other images per
global feature, so ``K * L`` negatives per positive instead of ``(B - 1) L``.
Each row of a mask should hold at least one 1 (a row of zeros has no
negatives: jsd, dv and nwj then average over the other rows' negatives,
infonce scores that row's positives as a single candidate, ``log 1 = 0``).

Each function returns the bound in nats as a float32 scalar; the training loss
is its negative.  The negatives of a sample are the *other* samples of the
batch, so every bound needs ``B >= 2``: a score tensor whose static batch size
is 0 or 1 raises ``ValueError``.  With a dynamic batch dimension (``None``,
e.g. the last, partial batch of ``model.fit``) the check cannot run at trace
time, and a batch of one evaluates to NaN for jsd, dv and nwj (0 / 0 in the
mean over no negatives) and to a meaningless 0 for infonce (``log 1``, one
candidate); :class:`dim_keras.models.DeepInfoMax` skips such a batch in
``train_step`` and ``test_step`` instead of applying NaN gradients.

Scores are cast to float32 first so that the bounds stay exact under mixed
precision, and all log-sum-exps shift by the max, so scores of +-1e4 do not
overflow.  Masking is exact: negatives are selected with 0/1 weights (means)
or ``-inf`` (log-sum-exp), never by a soft "-10" offset.

Everything is written with ``keras.ops``, so the same functions run on the
TensorFlow and the JAX backend (inside ``tf.function`` / ``jax.jit`` too):
static sizes come back as Python ints, a dynamic TF batch as a scalar tensor,
and every op below accepts either.
"""

import math

import keras
from keras import ops

from dim_keras.choices import ESTIMATORS

_LOG2 = math.log(2.0)
# NWJ's term e^{-1} E_M[e^T] = exp(lme - 1), lme = log E_M[e^T], is exact for
# lme <= 30 (the term is then at most e^29 ~ 4e12 nats: a useless critic) and
# continues linearly beyond, so a run-away critic gets a finite loss (for any
# lme below ~1e25) whose gradient, e^29, still pulls it back.
_NWJ_LOG_MEAN_EXP_CAP = 30.0


def _as_scores(scores, name):
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    rank = ops.ndim(scores)  # None for a TF tensor of unknown rank
    if rank != 3:
        raise ValueError(f"scores must have shape [B, B, L], got rank {rank}")
    batch = scores.shape[0]
    if batch is not None and batch < 2:
        raise ValueError(
            f"{name} needs at least 2 samples per batch: the negatives are the "
            f"other samples of the batch, got scores of shape {tuple(scores.shape)}"
        )
    return scores


def positive_mask(scores):
    """Float mask [B, B, L] that is 1 on positive pairs (i == j), else 0."""
    shape = ops.shape(scores)  # dynamic entries are scalar tensors on TF
    eye = ops.eye(shape[0], shape[1], dtype=scores.dtype)
    return ops.broadcast_to(eye[:, :, None], shape)


def _negatives(pos, negative_mask):
    """The ``[B, B, L]`` 0/1 weights of the negative pairs: every off-diagonal pair (``1 - pos``, the
    default) or the pairs of ``negative_mask`` ``[B, B]`` (broadcast over the locations, diagonal cleared)."""
    if negative_mask is None:
        return 1.0 - pos
    mask = ops.cast(ops.convert_to_tensor(negative_mask), "float32")
    if ops.ndim(mask) != 2:
        raise ValueError(f"negative_mask must have shape [B, B], got rank {ops.ndim(mask)}")
    return (1.0 - pos) * ops.broadcast_to(mask[:, :, None], ops.shape(pos))


def sample_negative_mask(batch, negatives, seed=None):
    """A ``[batch, batch]`` float32 0/1 mask with ``negatives`` ones in every row, none on the diagonal.

    Row ``i`` marks ``min(negatives, batch - 1)`` images ``j != i`` drawn uniformly at random without
    replacement, independently per row: the negative images of global feature ``i`` in DIM's
    number-of-negatives experiment (App. A.3, Fig. 9), whose local features at *all* locations are then
    its negatives (pass the mask as ``negative_mask`` to any bound).  The ranks of i.i.d. uniform noise
    give a uniformly random order of the other images (the diagonal is pushed last); the first
    ``negatives`` of that order are kept, so every row holds exactly that many ones even under ties.

    ``negatives`` is a static Python int (>= 1); ``batch`` a Python int or a dynamic scalar tensor (TF's
    partial batches: a batch of ``batch - 1 <= negatives`` then keeps all other images).  ``seed`` is a
    ``keras.random.SeedGenerator`` (or an int / None, as ``keras.random``), so the sampler runs inside
    ``tf.function``/XLA and ``jax.jit`` (a stateless JAX step maps the generator's state).
    """
    if int(negatives) != negatives or negatives < 1:
        raise ValueError(f"negatives must be an integer >= 1, got {negatives}")
    eye = ops.eye(batch, dtype="float32")
    # Noise in [0, 1); the diagonal at 2 sorts after every other image.
    noise = keras.random.uniform((batch, batch), seed=seed) + 2.0 * eye
    ranks = ops.argsort(ops.argsort(noise, axis=1), axis=1)  # rank of column j in row i's random order
    chosen = ops.cast(ranks < int(negatives), "float32")
    return chosen * (1.0 - eye)


def _masked_mean(values, mask):
    return ops.sum(values * mask) / ops.sum(mask)


def _minus_inf_where_unmasked(values, mask):
    """``values`` where ``mask > 0``, exactly ``-inf`` elsewhere (exp(-inf) == 0)."""
    return ops.where(mask > 0, values, ops.full_like(values, -math.inf))


def _masked_log_mean_exp(values, mask, axis=None):
    """log(mean(exp(values))) over entries where mask == 1, max-shifted."""
    masked = _minus_inf_where_unmasked(values, mask)
    shift = ops.stop_gradient(ops.max(masked, axis=axis, keepdims=True))
    shifted = ops.exp(masked - shift)  # exp(-inf) == 0: exact exclusion
    total = ops.sum(shifted, axis=axis, keepdims=True)
    count = ops.sum(mask, axis=axis, keepdims=True)
    result = ops.log(total) + shift - ops.log(count)
    if axis is None:
        return ops.reshape(result, ())
    return ops.squeeze(result, axis=axis)


def _positives(scores):
    """``[B, L]`` = ``T(i, i, l)``: the diagonal of every location's ``[B, B]`` slice.

    Transposed to ``[L, B, B]`` first so that the diagonal is taken over the
    last two axes (on TF a plain ``diag_part``, also for a dynamic batch).
    """
    return ops.transpose(ops.diagonal(ops.transpose(scores, (2, 0, 1)), axis1=1, axis2=2))


def _negatives_log_sum_exp(scores, negatives):
    """``[B, 1]``: ``log sum_{j, l'} e^{T(i, j, l')}`` over the negatives of global ``i``
    (``negatives``: the ``[B, B, L]`` weights of :func:`_negatives`; flattened to ``[B, B*L]``,
    every other entry exactly ``-inf``)."""
    batch = ops.shape(scores)[0]
    negatives = _minus_inf_where_unmasked(
        ops.reshape(scores, (batch, -1)), ops.reshape(negatives, (batch, -1)))
    return ops.logsumexp(negatives, axis=1, keepdims=True)


def jsd_positive_term(scores):
    """Per-pair positive term of the JSD bound, ``log 2 - softplus(-T)``."""
    return _LOG2 - ops.softplus(-scores)


def jsd_negative_term(scores):
    """Per-pair negative term of the JSD bound, ``softplus(T) - log 2``.

    Equal to the authors' ``softplus(-T) + T - log 2``.
    """
    return ops.softplus(scores) - _LOG2


def jsd_lower_bound(scores, negative_mask=None):
    """Jensen-Shannon MI estimator, eq. 4 (softplus form, f-GAN).

    Returns ``E_J[log2 - sp(-T)] - E_M[sp(T) - log2]``, which is eq. 4 plus the
    constant ``2 log 2``: the variational lower bound on ``2 * JSD(J || M)``
    (0 for independent variables, at most ``2 log 2``).  Positives are averaged
    over the ``B * L`` diagonal pairs, negatives over the ``B (B - 1) L``
    off-diagonal pairs; positives are excluded from the negatives (App. A.3:
    "JSD worked better by excluding positive samples from the product of
    marginals").  Because both terms are plain means, this equals the average
    over locations of the per-location bounds (eq. 6).  With ``negative_mask``
    (module docstring) the negatives are the ``sum(mask) * L`` pairs it marks
    (``B K L`` for :func:`sample_negative_mask`'s ``K`` per row).
    """
    scores = _as_scores(scores, "jsd_lower_bound")
    pos = positive_mask(scores)
    e_pos = _masked_mean(jsd_positive_term(scores), pos)
    e_neg = _masked_mean(jsd_negative_term(scores), _negatives(pos, negative_mask))
    return e_pos - e_neg


def dv_lower_bound(scores, negative_mask=None):
    """Donsker-Varadhan (MINE) bound, eq. 2: ``E_J[T] - log E_M[e^T]``.

    ``E_M`` runs over all negative pairs of the batch (every global feature
    with every location of every other image), computed as a max-shifted
    log-mean-exp.  With ``L = 1`` this is exactly MINE's batch estimator.
    With ``negative_mask`` ``E_M`` runs over the pairs it marks only.
    """
    scores = _as_scores(scores, "dv_lower_bound")
    pos = positive_mask(scores)
    e_pos = _masked_mean(scores, pos)
    return e_pos - _masked_log_mean_exp(scores, _negatives(pos, negative_mask))


def _exp_minus_one_continued(log_mean_exp, cap=_NWJ_LOG_MEAN_EXP_CAP):
    """``exp(lme - 1)`` for ``lme <= cap``; beyond, its first-order continuation
    ``exp(cap - 1) * (1 + (lme - cap))``: finite, continuous and with the
    positive slope ``exp(cap - 1)`` (a plain clamp would have zero gradient).
    """
    clamped = ops.minimum(log_mean_exp, cap)
    # One expression for both sides: below the cap lme - clamped == 0, so no
    # branch evaluates exp(lme - 1) itself (whose inf would poison a where's
    # gradient).
    return ops.exp(clamped - 1.0) * (1.0 + (log_mean_exp - clamped))


def nwj_lower_bound(scores, negative_mask=None):
    """NWJ bound (Tschannen et al. 2020, eq. 4): ``E_J[T] - e^{-1} E_M[e^T]``.

    The second term is evaluated as ``exp(logmeanexp(T) - 1)`` from a
    max-shifted log-mean-exp; past ``logmeanexp(T) = 30`` it continues
    linearly (see ``_exp_minus_one_continued``), so the value stays a finite
    float32 and a run-away critic is still pulled back by the gradient.
    With ``negative_mask`` ``E_M`` runs over the pairs it marks only.
    """
    return _f_divergence_bound(scores, "nwj_lower_bound", negative_mask)


def _f_divergence_bound(scores, name, negative_mask=None):
    """``E_J[T] - E_M[e^{T-1}]`` (NWJ = MINE-f), with the continued exponential."""
    scores = _as_scores(scores, name)
    pos = positive_mask(scores)
    e_pos = _masked_mean(scores, pos)
    log_mean_exp = _masked_log_mean_exp(scores, _negatives(pos, negative_mask))
    return e_pos - _exp_minus_one_continued(log_mean_exp)


def mine_f_lower_bound(scores, negative_mask=None):
    """MINE-f (Belghazi et al. 2018, Sec. 3.1): ``E_J[T] - E_M[e^{T-1}]``.

    MINE-f replaces the Donsker-Varadhan representation by the weaker
    f-divergence representation of the KL divergence,
    ``KL(P || Q) >= sup_T E_P[T] - E_Q[e^{T-1}]``.  Since
    ``E_M[e^{T-1}] = e^{-1} E_M[e^T]`` this is *the same function* as NWJ
    (:func:`nwj_lower_bound`, Nguyen-Wainwright-Jordan): same value, same
    gradient, same numerics (including the linear continuation past
    ``logmeanexp(T) = 30``).  It is kept under MINE's name so the simulation
    can report it next to DV and DV+EMA as in the MINE paper; the optimal
    critic is ``T* = 1 + log(dJ/dM)`` instead of DV's ``log(dJ/dM) + c``.
    """
    return _f_divergence_bound(scores, "mine_f_lower_bound", negative_mask)


def update_log_ema(log_ema, batch_log_mean_exp, decay):
    """One EMA step of ``E_M[e^T]`` in log space.

    ``ema <- decay * ema + (1 - decay) * batch_mean(e^T)`` computed as
    ``logaddexp(log(decay) + log_ema, log(1 - decay) + batch_log_mean_exp)``
    (no overflow for scores of any size).  ``log_ema = -inf`` means "no
    history": the first step then returns the batch value itself (the
    bias-free initialisation).  ``decay = 0`` returns the batch value; the
    result carries no gradient.  ``log_ema`` may be a tensor, a number or a
    ``keras.Variable`` (read, not assigned).
    """
    log_ema = ops.cast(ops.convert_to_tensor(log_ema), "float32")
    batch = ops.stop_gradient(ops.cast(batch_log_mean_exp, "float32"))
    decay = ops.cast(decay, "float32")
    fresh = ops.logical_or(ops.isinf(log_ema), decay <= 0.0)
    # log(0) = -inf only enters the discarded branch of the where.
    old = ops.log(ops.maximum(decay, 1e-30)) + ops.where(fresh, ops.zeros_like(log_ema), log_ema)
    new = ops.log(ops.maximum(1.0 - decay, 1e-30)) + batch
    mixed = ops.logsumexp(ops.stack([old, new]), axis=0)
    return ops.stop_gradient(ops.where(fresh, batch, mixed))


def dv_bias_corrected(scores, log_ema, decay, negative_mask=None):
    """MINE's bias-corrected DV gradient (Sec. 3.2), as a pure function.

    Returns ``(bound, surrogate, new_log_ema)``:

    * ``bound``: the plain DV bound ``E_J[T] - log E_M[e^T]`` of this batch
      (what is reported; carries DV's gradient);
    * ``new_log_ema``: ``log`` of the moving average
      ``decay * ema + (1 - decay) * batch_mean(e^T)``
      (:func:`update_log_ema`; ``log_ema = -inf`` starts it), no gradient;
    * ``surrogate``: the objective to *maximise* instead of ``bound``,
      ``E_J[T] - batch_mean(e^T) / stop_gradient(ema)``, computed as
      ``E_J[T] - exp(lme - new_log_ema)`` (both logs, no overflow).  Its
      gradient is ``grad E_J[T] - grad E_M[e^T] / ema``: the DV gradient with
      the biased batch denominator replaced by the moving average.  With
      ``decay = 0`` the EMA is the batch value, so the gradient is exactly
      DV's (the surrogate's value is then ``E_J[T] - 1``, not the bound).

    Pure (the state goes in and comes out), so it is what a stateless JAX
    step calls; :class:`BiasCorrectedDV` wraps it for stateful loops.
    ``negative_mask`` restricts ``E_M`` as in :func:`dv_lower_bound`.
    """
    scores = _as_scores(scores, "dv_bias_corrected")
    pos = positive_mask(scores)
    e_pos = _masked_mean(scores, pos)
    lme = _masked_log_mean_exp(scores, _negatives(pos, negative_mask))
    new_log_ema = update_log_ema(log_ema, lme, decay)
    surrogate = e_pos - ops.exp(lme - new_log_ema)
    return e_pos - lme, surrogate, new_log_ema


class BiasCorrectedDV:
    """The stateful side of :func:`dv_bias_corrected` for training loops.

    Holds ``log ema`` in a non-trainable float32 ``keras.Variable`` (start:
    ``-inf``, no history).  ``dv(scores)`` returns ``(bound, surrogate)`` and
    updates the variable; maximise ``surrogate`` (e.g. ``loss = -surrogate``),
    report ``bound``.  Works eagerly on every backend and inside
    ``tf.function`` on TensorFlow; inside ``jax.jit`` a variable cannot be
    assigned, so a JAX step passes the state through
    :func:`dv_bias_corrected` instead (``log_ema.value`` in, the new value
    out).  ``autocast=False``: under a mixed-precision policy the state is
    still read in float32.
    """

    def __init__(self, decay=0.99):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.log_ema = keras.Variable(-math.inf, shape=(), dtype="float32", trainable=False,
                                      autocast=False, name="dv_log_ema")

    def reset(self):
        self.log_ema.assign(-math.inf)

    def __call__(self, scores):
        bound, surrogate, new_log_ema = dv_bias_corrected(scores, self.log_ema, self.decay)
        self.log_ema.assign(new_log_ema)
        return bound, surrogate


def infonce_lower_bound(scores, negative_mask=None):
    """infoNCE bound, eq. 5.

    For global feature ``i`` and location ``l`` the positive ``T(i, i, l)`` is
    classified against the local features of all *other* images at *all*
    locations, ``T(i, j, l')`` for ``j != i`` (the authors' construction, with
    the same-image pairs masked exactly).  With ``K = 1 + (B - 1) L``
    candidates the bound is ``log K - E[cross-entropy]``, so it never exceeds
    ``log K`` (``log B`` for vector pairs).

    With ``negative_mask`` the candidates of global ``i`` are its positive and
    the local features (all locations) of the ``n_i`` images of row ``i``:
    the bound is ``mean_i log(1 + n_i L) - E[cross-entropy]``, i.e.
    ``log(1 + K L) - E[cross-entropy]`` for :func:`sample_negative_mask`'s
    ``K`` per row, at most ``log(1 + K L)``.
    """
    scores = _as_scores(scores, "infonce_lower_bound")
    shape = ops.shape(scores)
    batch, locations = shape[0], shape[2]
    pos = positive_mask(scores)
    positives = _positives(scores)  # [B, L]
    negatives = _negatives(pos, negative_mask)
    # The negatives of global i are shared by all its locations: one
    # log-sum-exp per row, then log(e^pos + e^neg_lse) per (i, l); no
    # [B, L, B*L] intermediate.
    neg_lse = _negatives_log_sum_exp(scores, negatives)  # [B, 1]
    shift = ops.stop_gradient(ops.maximum(neg_lse, positives))  # [B, L]
    log_partition = (
        ops.log(ops.exp(positives - shift) + ops.exp(neg_lse - shift)) + shift
    )
    log_softmax_positive = positives - log_partition
    if negative_mask is not None:
        # n_i L negatives + the positive per row (the counts of 0/1 weights are exact in float32).
        candidates = 1.0 + ops.sum(negatives[:, :, 0], axis=1) * ops.cast(locations, "float32")
        return ops.mean(ops.log(candidates)) + ops.mean(log_softmax_positive)
    # Counted in integers, then float32 (as the scores): exact for any batch.
    candidates = 1.0 + ops.cast((batch - 1) * locations, "float32")
    return ops.log(candidates) + ops.mean(log_softmax_positive)


def kpair_triplet_loss(scores, negative_mask=None):
    """The multi-class K-pair ("k-plet" triplet) loss of a score tensor (Tschannen et al. 2020, Sec. 4 and
    App. C; Sohn 2016, eq. 7)::

        L = mean_{i, l} log(1 + sum_{j != i, l'} exp(T(i, j, l') - T(i, i, l)))

    every anchor ``i`` (at location ``l``) against its positive and all its negatives, the candidates of
    :func:`infonce_lower_bound`.  App. C rewrites I_NCE as exactly this loss subtracted from a constant:
    ``infonce_lower_bound(scores) == log K - kpair_triplet_loss(scores)``, ``K = 1 + (B - 1) L`` (``log B``
    for vector pairs), so maximising I_NCE is minimising a triplet loss, and with a separable critic
    ``phi(x)^T phi(y)`` and one shared encoder it is Sohn's metric-learning loss.  Computed as
    ``softplus(logsumexp_neg - positive)`` (no overflow for large score gaps).  ``negative_mask``
    restricts the negatives as in :func:`infonce_lower_bound` (the identity then holds with its
    ``log(1 + K L)``).
    """
    return ops.mean(_location_losses(_as_scores(scores, "kpair_triplet_loss"), negative_mask))


def _location_losses(scores, negative_mask):
    pos = positive_mask(scores)
    positives = _positives(scores)  # [B, L] = T(i, i, l)
    neg_lse = _negatives_log_sum_exp(scores, _negatives(pos, negative_mask))  # [B, 1]: log sum_{neg} e^T
    return ops.softplus(neg_lse - positives)


def infonce_location_losses(scores, negative_mask=None):
    """The infoNCE loss of every (global ``i``, location ``l``) pair, ``[B, L]``: the cross-entropy
    ``-log softmax`` of the positive ``T(i, i, l)`` among the candidates of :func:`infonce_lower_bound`.
    Their mean is :func:`kpair_triplet_loss`, and ``infonce_lower_bound = log K - mean``.  The loss map of
    the DIM paper's Fig. 14 ("minus the value in Equation 5" at each location)."""
    return _location_losses(_as_scores(scores, "infonce_location_losses"), negative_mask)


_BOUNDS = {
    "jsd": jsd_lower_bound,
    "dv": dv_lower_bound,
    "infonce": infonce_lower_bound,
    "nwj": nwj_lower_bound,
    "mine_f": mine_f_lower_bound,
}


def get_estimator(name):
    """Returns the bound function named ``name`` (one of ``ESTIMATORS``)."""
    try:
        return _BOUNDS[name]
    except KeyError:
        raise ValueError(
            f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}"
        ) from None


def mi_lower_bound(scores, estimator, negative_mask=None):
    """The MI lower bound (nats) of ``scores`` under the named estimator (``negative_mask``: see the
    module docstring)."""
    return get_estimator(estimator)(scores, negative_mask=negative_mask)
