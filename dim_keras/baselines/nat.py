"""Noise As Targets (Bojanowski & Joulin, "Unsupervised Learning by Predicting Noise", ICML 2017): ``--method=nat``.

NAT fixes one target per training image, drawn uniformly on the unit sphere of the code space (an l2-normalised
Gaussian sample), and trains the encoder so that each image's l2-normalised code lands on its target:

    min_theta  1/B sum_i || z_i - c_{a(i)} ||^2,      z_i = y_i / ||y_i||,

with ``a`` a one-to-one assignment of images to targets (the paper's "separable square loss"; since
``||z|| = ||c|| = 1`` this is ``2 - 2 z_i . c_{a(i)}``, i.e. maximising the dot product).  The assignment is the
paper's permutation matrix ``P``, updated by its "stochastic batch reassignment": on a mini-batch, the batch's
images are re-matched among the batch's *current* targets by the Hungarian algorithm on the ``B x B`` score
matrix ``z_i . c_j``, and the gradient step is then taken toward the new targets.  Fixed targets spread over the
sphere and a 1-to-1 assignment rule out the collapsed solution without any negative pairs.

Hyper-parameters and where they come from:

- targets ``[N, d]``: ``N`` = the training split's size (one target per image; the authors' code sets its number
  of "clusters" to the number of images), ``d`` = the code size ``--y_dim`` (the authors' AlexNet used 2048; DIM's
  comparison holds the code size fixed across methods instead).  Drawn once from ``--seed`` with NumPy (the same
  targets on every backend) and never trained.
- the loss: squared l2 distance summed over the code, averaged over the batch (the authors' code: an
  ``nn.Normalize(2)`` last layer and ``nn.MSECriterion`` with ``sizeAverage = false``, logged per image).
- re-assignment period ``--nat_reassign_every`` (default 3): the authors' code (facebookresearch/noise-as-targets,
  ``main.lua``: ``-permute 3``, "period for permuting targets", run with ``-permute 3`` in ``main.sh``) re-matches
  the batch in its forward hook only when ``epoch % permute == 0`` (0-based epochs: the first epoch re-assigns)
  and keeps the assignment in the other epochs.  Here the epoch is ``optimizer.iterations // steps_per_epoch``,
  evaluated in the step's graph (so no retracing per epoch); without ``steps_per_epoch`` the epoch is unknown and
  every step re-assigns (the plain per-batch update, a period of one step).  The paper's text was not at hand
  here; the period and the facts above are checked against the authors' released code.
- initial assignment: the identity (image ``i`` -> target ``i``).  The authors start from a random permutation;
  the targets are i.i.d., so a random permutation of them has the same distribution as the identity.

Deviations: the optimiser is Adam (dim_keras's recipe) rather than the authors' SGD at lr 0.01, and there is
no fixed Sobel pre-filter (the encoders are DIM's; the authors feed AlexNet Sobel-filtered images).  The
exported ``y`` is the un-normalised code (the normalisation is part of the loss), as the other methods export it.

Evaluation batches carry no image indices (``extra`` is empty there), so the logged ``target_loss`` of an
evaluation step is the distance of each normalised code to its *nearest* target among all ``N``, a lower bound on
the training loss that measures how closely the codes lie on the target cloud.

The Hungarian algorithm runs on the host (``scipy.optimize.linear_sum_assignment``): through
``tf.numpy_function`` on TensorFlow, which XLA cannot compile (:meth:`NoiseAsTargets.compile` therefore turns
``jit_compile`` off there), and through ``jax.pure_callback`` on JAX, which works inside the jitted step.
"""

import keras
import numpy as np
from keras import ops

from dim_keras.baselines.base import BaselineModel


def _optimal_permutation(cost):
    """``perm`` with ``sum_i cost[i, perm[i]]`` minimal over all permutations (the Hungarian algorithm, scipy's
    ``linear_sum_assignment``), as int32; runs on the host."""
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(cost, dtype=np.float64)
    rows, cols = linear_sum_assignment(cost)
    permutation = np.empty(cost.shape[0], dtype=np.int32)
    permutation[rows] = cols  # rows is 0..B-1 in order for a square matrix; indexed anyway
    return permutation


def host_optimal_permutation(cost):
    """:func:`_optimal_permutation` of a square ``[B, B]`` cost tensor, called from inside a compiled step: the one
    backend-specific piece of NAT's objective.  TensorFlow: ``tf.numpy_function`` (runs in graph mode, not under
    XLA); JAX: ``jax.pure_callback`` (runs under ``jax.jit``; the cost must carry no gradient, callbacks have no
    derivative).  Returns int32 ``[B]``."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.pure_callback(_optimal_permutation, jax.ShapeDtypeStruct((cost.shape[0],), np.int32), cost)
    if backend == "tensorflow":
        import tensorflow as tf

        permutation = tf.numpy_function(_optimal_permutation, [cost], tf.int32, stateful=False)
        permutation.set_shape(cost.shape[:1])
        return permutation
    raise NotImplementedError(f"NAT's Hungarian re-assignment supports the tensorflow and jax backends, not {backend}")


def unit_sphere_targets(num_examples, dim, seed=None):
    """``num_examples`` points drawn uniformly on the unit sphere of R^dim (standard normal samples divided by
    their norm, as the authors' code draws them), float32, from NumPy's ``default_rng(seed)``."""
    noise = np.random.default_rng(seed).standard_normal((num_examples, dim))
    return (noise / np.linalg.norm(noise, axis=1, keepdims=True)).astype(np.float32)


def _normalise(y):
    """``y / ||y||`` along the last axis (float32; a zero code stays zero instead of dividing by 0)."""
    y = ops.cast(y, "float32")
    return y * ops.rsqrt(ops.maximum(ops.sum(ops.square(y), axis=-1, keepdims=True), 1e-12))


def _all_distinct(indices):
    """Whether no index appears twice in the 1-D ``indices``: a batch holding one image twice would hold its target
    twice, and re-matching it would give two images the same target (no longer a permutation)."""
    ordered = ops.sort(indices)
    return ops.logical_not(ops.any(ops.equal(ordered[1:], ordered[:-1])))


@keras.saving.register_keras_serializable(package="dim_keras")
class NoiseAsTargets(BaselineModel):
    """Noise As Targets (Bojanowski & Joulin 2017): the encoder's normalised code regresses onto a fixed noise
    target per image, the image-to-target assignment re-matched within each batch by the Hungarian algorithm.
    See the module docstring for the objective, the schedule and their sources.

    Training batches are ``(images, indices)``: ``indices`` (int, ``[B]``) are the images' positions in the training
    split (``apps/train.py`` batches ``np.arange(N)`` along with the images for ``--method=nat``).  Evaluation
    batches are images alone.

    State (non-trainable variables, checkpointed and saved in ``.keras`` files; no gradient reaches them):
    ``targets`` ``[N, d]`` float32 unit vectors and ``assignment`` ``[N]`` int32, a permutation of ``0..N-1``
    (image ``i`` -> target ``assignment[i]``).

    Logs ``target_loss`` (the loss), ``reassigned`` (the fraction of the batch whose target changed this step)
    and ``cost_gain`` (how much the re-matching lowered the batch's mean squared distance, >= 0).

    Args:
        encoder: a :mod:`dim_keras.encoders` model; its ``y`` width is the target dimension.
        num_examples: the training split's size ``N`` (one target per image).
        reassign_every: re-match only in epochs ``e`` with ``e % reassign_every == 0`` (0-based, so the first epoch
            re-matches); needs ``steps_per_epoch``.
        steps_per_epoch: training steps per epoch (the epoch is ``optimizer.iterations // steps_per_epoch``);
            ``None``: every step re-matches.
        seed: draws the targets (and seeds the model's seed generator).
    """

    def __init__(self, encoder, num_examples, reassign_every=3, steps_per_epoch=None, seed=None, **kwargs):
        super().__init__(encoder, seed=seed, **kwargs)
        if int(num_examples) != num_examples or num_examples < 2:
            raise ValueError(f"NAT needs the training split's size (>= 2 images, one target each), got {num_examples}")
        if int(reassign_every) != reassign_every or reassign_every < 1:
            raise ValueError(f"reassign_every must be an integer >= 1, got {reassign_every}")
        if steps_per_epoch is not None and (int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1):
            raise ValueError(f"steps_per_epoch must be an integer >= 1 or None, got {steps_per_epoch}")
        self.num_examples = int(num_examples)
        self.reassign_every = int(reassign_every)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.targets = self.add_weight(shape=(self.num_examples, self.latent_dim), initializer="zeros",
                                       dtype="float32", trainable=False, name="targets")
        self.targets.assign(unit_sphere_targets(self.num_examples, self.latent_dim, seed))
        self.assignment = self.add_weight(shape=(self.num_examples,), initializer="zeros", dtype="int32",
                                          trainable=False, name="assignment")
        self.assignment.assign(np.arange(self.num_examples, dtype=np.int32))
        self._finish_init(["target_loss", "reassigned", "cost_gain"])

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer=None, discriminator_optimizer=None, **kwargs):
        """:meth:`TwoObjectiveModel.compile`, with ``jit_compile`` off on TensorFlow: the host Hungarian call
        (``tf.numpy_function``) has no XLA kernel.  On JAX the jitted step keeps it (``jax.pure_callback``)."""
        if keras.backend.backend() == "tensorflow":
            kwargs["jit_compile"] = False
        super().compile(optimizer=optimizer, discriminator_optimizer=discriminator_optimizer, **kwargs)

    def _train_on(self, images, *extra):
        import tensorflow as tf

        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            # Each replica would re-match its own share of the batch and write its own slice of the one assignment
            # variable, which a mirrored variable cannot take from a replica context.
            raise ValueError("NAT trains on one device on TensorFlow (its assignment is re-matched on the host "
                             "per batch): use the default strategy, or the JAX backend")
        super()._train_on(images, *extra)

    # ---------------------------------------------------------------- objective
    def _reassign_now(self):
        """Whether this step re-matches: ``True`` (every step) without ``steps_per_epoch`` or an optimizer, else
        a boolean tensor ``(iterations // steps_per_epoch) % reassign_every == 0`` (``iterations`` counts the
        steps already taken, so this step belongs to epoch ``iterations // steps_per_epoch``)."""
        optimizer = self.representation_optimizer()
        if self.steps_per_epoch is None or optimizer is None:
            return True
        epoch = ops.floor_divide(ops.cast(optimizer.iterations, "int32"), self.steps_per_epoch)
        return ops.equal(ops.mod(epoch, self.reassign_every), 0)

    def _representation_objective(self, images, extra, training):
        features = self.encoder(images, training=training)
        z = _normalise(features["y"])
        targets = ops.convert_to_tensor(self.targets)
        extra = tuple(e for e in extra if e is not None)  # train_on_batch(images) packs (images, None)
        if not extra:
            if training:
                raise ValueError("NoiseAsTargets trains on (images, indices) batches: each image's index in the "
                                 "training split picks its noise target")
            # No indices: the distance to the nearest of all N targets (2 - 2 max_j z . c_j for unit vectors).
            nearest = 2.0 - 2.0 * ops.max(ops.matmul(z, ops.transpose(targets)), axis=-1)
            loss = ops.mean(nearest)
            return loss, {"target_loss": loss}, {"features": z}
        indices = ops.cast(ops.reshape(extra[0], (-1,)), "int32")
        current = ops.take(ops.convert_to_tensor(self.assignment), indices)  # [B] target ids before this step
        scores = ops.stop_gradient(ops.matmul(z, ops.transpose(ops.take(targets, current, axis=0))))  # z_i . c_j

        def rematched():
            # max sum_i z_i . c_perm(i) == min sum_i ||z_i - c_perm(i)||^2 (unit vectors): the Hungarian algorithm
            # on the batch's own targets only, so the batch's set of targets is kept.
            return ops.take(current, host_optimal_permutation(-scores))

        if training:
            go = _all_distinct(indices)
            reassign = self._reassign_now()
            if reassign is not True:
                go = ops.logical_and(reassign, go)
            assigned = ops.cond(go, rematched, lambda: current)
            # Write the batch's new targets back; the other images keep theirs.
            self.assignment.assign(ops.scatter_update(ops.convert_to_tensor(self.assignment),
                                                      ops.expand_dims(indices, -1), assigned))
        else:
            assigned = current
        distance = ops.sum(ops.square(z - ops.take(targets, assigned, axis=0)), axis=-1)
        before = ops.sum(ops.square(ops.stop_gradient(z) - ops.take(targets, current, axis=0)), axis=-1)
        loss = ops.mean(distance)
        terms = {"target_loss": loss,
                 "reassigned": ops.mean(ops.cast(ops.not_equal(assigned, current), "float32")),
                 "cost_gain": ops.mean(before - ops.stop_gradient(distance))}
        return loss, terms, {"features": z, "previous": current, "assigned": assigned}

    # ------------------------------------------------------------------- config
    def get_config(self):
        return {**super().get_config(), "num_examples": self.num_examples, "reassign_every": self.reassign_every,
                "steps_per_epoch": self.steps_per_epoch}


def build(config, encoder, encoder_name, input_shape, steps_per_epoch=None, num_examples=None):
    """``--method=nat``: :class:`NoiseAsTargets` on ``encoder`` (targets in ``--y_dim``, drawn from ``--seed``;
    ``--nat_reassign_every``), uncompiled; ``num_examples`` (the training split's size) is required."""
    if num_examples is None:
        raise ValueError("NAT keeps one noise target per training image: num_examples (the training split's size) "
                         "is required")
    return NoiseAsTargets(encoder, num_examples=num_examples, reassign_every=config.nat_reassign_every,
                          steps_per_epoch=steps_per_epoch, seed=config.seed)
