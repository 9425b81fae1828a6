"""Priors V and the prior discriminator D_phi (DIM section 3.3, eq. 7, Table 10).

Prior matching trains the encoder so that the push-forward U_{psi,P} of the
data through E_psi matches a prior V, adversarially:

    (omega*, psi*) = argmin_psi argmax_phi  D_hat_phi(V || U_{psi,P})        (7)
                   = E_V[log D_phi(y)] + E_P[log(1 - D_phi(E_psi(x)))]

The discriminator has its own optimizer and sees Y with the gradient stopped
(it never moves the encoder); the encoder gets the non-saturating generator
loss ``-log D(E(x)) = softplus(-logit)`` (it never moves the discriminator).
This is how the authors train it, and why the discriminator does not receive
the encoder's loss (their issues #31, #39).
"""

import keras
from keras import layers, ops

from dim_keras.choices import PRIORS


def match_to_prior_space(y, prior):
    """Maps Y into the prior's support before matching.

    ``uniform`` (the paper's default, "a compact uniform distribution on
    [0, 1]^64"): Y goes through a sigmoid, as in the authors' code.
    ``unit_sphere``: Y is L2-normalised, so only its direction is matched.
    ``gaussian`` and ``unit_ball``: Y as is.
    """
    y = ops.cast(y, "float32")
    if prior == "uniform":
        return ops.sigmoid(y)
    if prior == "unit_sphere":
        return y / ops.maximum(ops.norm(y, axis=-1, keepdims=True), 1e-12)
    if prior in ("gaussian", "unit_ball"):
        return y
    raise ValueError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")


def sample_prior(prior, batch_size, dim, seed=None):
    """Draws ``[batch_size, dim]`` float32 samples from the named prior."""
    shape = (batch_size, dim)
    if prior == "uniform":
        return keras.random.uniform(shape, 0.0, 1.0, seed=seed)
    if prior == "gaussian":
        return keras.random.normal(shape, seed=seed)
    if prior in ("unit_ball", "unit_sphere"):
        direction = keras.random.normal(shape, seed=seed)
        direction = direction / ops.maximum(
            ops.norm(direction, axis=-1, keepdims=True), 1e-12
        )
        if prior == "unit_sphere":
            return direction
        # Radius r = u^(1/d) makes the ball uniform in volume.
        radius = keras.random.uniform((batch_size, 1), 0.0, 1.0, seed=seed)
        return direction * ops.power(radius, 1.0 / dim)
    raise ValueError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")


@keras.saving.register_keras_serializable(package="dim_keras")
class PriorDiscriminator(keras.Model):
    """Prior matching network of Table 10: Linear 1000 ReLU, 200 ReLU, 1 logit.

    float32 throughout, also under a mixed-precision policy: the model itself defaults to
    ``dtype="float32"``, because Keras casts a layer's floating inputs to the layer's compute dtype
    before ``call``, so a float16 model would round Y and the prior samples to float16 before they reach
    its float32 layers.
    """

    def __init__(self, hidden_units=(1000, 200), **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.hidden_units = tuple(hidden_units)
        self.hidden = [
            layers.Dense(u, activation="relu", dtype="float32", name=f"dense_{k}")
            for k, u in enumerate(self.hidden_units)
        ]
        self.logit = layers.Dense(1, dtype="float32", name="logit")

    def build(self, input_shape):
        shape = input_shape
        for layer in self.hidden:
            layer.build(shape)
            shape = tuple(shape[:-1]) + (layer.units,)
        self.logit.build(shape)

    def call(self, inputs):
        h = ops.cast(inputs, "float32")
        for layer in self.hidden:
            h = layer(h)
        return ops.squeeze(self.logit(h), axis=-1)

    def get_config(self):
        return {"name": self.name, "hidden_units": list(self.hidden_units)}


def discriminator_loss(real_logits, fake_logits):
    """Binary cross-entropy of eq. 7 for D: prior samples real, Y fake."""
    return ops.mean(ops.softplus(-real_logits)) + ops.mean(ops.softplus(fake_logits))


def encoder_prior_loss(fake_logits):
    """Non-saturating generator loss for the encoder: ``-log D(E(x))``."""
    return ops.mean(ops.softplus(-fake_logits))


def discriminator_accuracy(real_logits, fake_logits):
    """Fraction of prior samples and encoder outputs classified correctly."""
    correct = ops.concatenate(
        [ops.cast(real_logits > 0, "float32"), ops.cast(fake_logits <= 0, "float32")]
    )
    return ops.mean(correct)
