"""An invertible encoder trained to be bad for linear classification (Tschannen et al., ICLR 2020, Sec. 3.1,
"Maximized MI and worsened downstream performance", Fig. 1c; App. B).

"We model g1 with the same RealNVP architecture as in the first experiment, and do not model g2.  On top of
g1(X(1)) we add a linear layer mapping to 10 outputs (i.e. logits).  The parameters of the linear layer [are]
trained by minimizing the cross-entropy loss with respect to the true label [...].  Conversely, the parameters
of the encoder g1 are trained to minimize the cross-entropy loss with respect to a uniform probability vector
over all 10 classes.  We use the Adam optimizer with a learning rate of 1e-4 for the parameters of the
classifier and 1e-6 for the parameters of the encoder, and perform 10 classifier optimization steps per
encoder step.  Furthermore, in a warm-up phase we train the classifier for 1k iterations before alternating
between classifier and encoder steps."

No MI estimator is involved: g1 is invertible, so ``I(g1(X1); X2) = I(X1; X2)`` whatever it learns, and the
experiment shows an MI-maximising encoder whose (separately trained) linear probe is worse than raw pixels.
"""

import keras
import tensorflow as tf
from keras import layers, ops


def uniform_cross_entropy(logits):
    """Mean over the batch of the cross-entropy of ``softmax(logits)`` to the uniform vector over the
    classes: ``-(1/K) sum_k log softmax(logits)_k`` (the encoder's loss; its minimum ``log K`` is reached
    exactly when every example's logits are equal)."""
    return ops.mean(-ops.mean(ops.log_softmax(logits, axis=-1), axis=-1))


@keras.saving.register_keras_serializable(package="dim_keras")
class AdversarialInvertible(keras.Model):
    """The adversarial game of App. B between an (invertible) ``encoder`` and a linear classifier of its output.

    One ``train_step`` is one round: ``classifier_steps`` classifier updates (cross-entropy to the true labels,
    ``classifier_optimizer``), then one encoder update (cross-entropy of the classifier's output to the uniform
    vector, ``encoder_optimizer``), each on its own ``batch_size`` examples: a batch of the dataset holds
    ``(classifier_steps + 1) * batch_size`` examples ``(x, labels)``.  The encoder is fixed during the
    classifier updates, so their codes come from one forward pass.  :meth:`warm_up` runs classifier updates
    alone (App. B's warm-up).  ``call(x)`` is the representation ``encoder(x)``.

    Metrics: ``classifier_loss`` and ``classifier_accuracy`` (the classifier's last update of the round, before
    it), ``encoder_loss`` (before the encoder's update).
    """

    def __init__(self, encoder, num_classes=10, classifier_steps=10, **kwargs):
        super().__init__(**kwargs)
        if int(classifier_steps) < 1:
            raise ValueError(f"classifier_steps must be >= 1, got {classifier_steps}")
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.classifier_steps = int(classifier_steps)
        self.classifier = layers.Dense(self.num_classes, name="classifier")
        self.classifier_loss_tracker = keras.metrics.Mean(name="classifier_loss")
        self.classifier_accuracy_tracker = keras.metrics.Mean(name="classifier_accuracy")
        self.encoder_loss_tracker = keras.metrics.Mean(name="encoder_loss")
        self._warm_up_step = None

    @property
    def metrics(self):
        return [self.classifier_loss_tracker, self.classifier_accuracy_tracker, self.encoder_loss_tracker]

    def build(self, input_shape):
        if not self.encoder.built:
            self.encoder.build(tuple(input_shape))
        self.classifier.build(self.encoder.compute_output_shape(tuple(input_shape)))
        self._input_dim = int(input_shape[-1])
        self.built = True

    def get_build_config(self):
        return {"input_shape": [None, self._input_dim]}

    def build_from_config(self, config):
        self.build(config["input_shape"])

    def compile(self, classifier_optimizer=None, encoder_optimizer=None, **kwargs):
        """App. B's Adam at 1e-4 (classifier) and 1e-6 (encoder) unless given."""
        self.classifier_optimizer = keras.optimizers.get(classifier_optimizer or keras.optimizers.Adam(1e-4))
        self.encoder_optimizer = keras.optimizers.get(encoder_optimizer or keras.optimizers.Adam(1e-6))
        # The classifier's optimizer is "the" optimizer for Keras (otherwise Keras builds an unused default one
        # over every variable); each is built on its own player's variables, as dim_keras.generation does.
        super().compile(optimizer=self.classifier_optimizer, **kwargs)
        self.classifier_optimizer.build(self.classifier.trainable_variables)
        self.encoder_optimizer.build(self.encoder.trainable_variables)

    def get_compile_config(self):
        return {name: keras.saving.serialize_keras_object(getattr(self, name))
                for name in ("classifier_optimizer", "encoder_optimizer")}

    def compile_from_config(self, config):
        self.compile(**{name: keras.saving.deserialize_keras_object(value) for name, value in config.items()})

    def call(self, x, training=False):
        return self.encoder(x, training=training)

    def logits(self, x, training=False):
        return self.classifier(self.encoder(x, training=training))

    def _classifier_update(self, codes, labels):
        variables = self.classifier.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.classifier(codes)
            loss = ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        self.classifier_optimizer.apply(tape.gradient(loss, variables), variables)
        accuracy = ops.mean(ops.cast(ops.equal(ops.argmax(logits, axis=-1), ops.cast(labels, "int64")),
                                     "float32"))
        return loss, accuracy

    def _encoder_update(self, x):
        variables = self.encoder.trainable_variables
        with tf.GradientTape() as tape:
            loss = uniform_cross_entropy(self.classifier(self.encoder(x, training=True)))
        self.encoder_optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    def train_step(self, data):
        x, labels = data
        size = ops.shape(x)[0] // (self.classifier_steps + 1)
        codes = ops.stop_gradient(self.encoder(x[:self.classifier_steps * size]))
        for step in range(self.classifier_steps):
            part = slice(step * size, (step + 1) * size)
            classifier_loss, accuracy = self._classifier_update(codes[part], labels[part])
        encoder_loss = self._encoder_update(x[self.classifier_steps * size:])
        self.classifier_loss_tracker.update_state(classifier_loss)
        self.classifier_accuracy_tracker.update_state(accuracy)
        self.encoder_loss_tracker.update_state(encoder_loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, labels = data
        logits = self.logits(x)
        self.classifier_loss_tracker.update_state(
            ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)))
        self.classifier_accuracy_tracker.update_state(
            ops.mean(ops.cast(ops.equal(ops.argmax(logits, axis=-1), ops.cast(labels, "int64")), "float32")))
        self.encoder_loss_tracker.update_state(uniform_cross_entropy(logits))
        return {m.name: m.result() for m in self.metrics}

    def warm_up(self, dataset, steps):
        """``steps`` classifier updates alone, on batches ``(x, labels)`` of ``dataset`` (App. B: "in a warm-up
        phase we train the classifier for 1k iterations"); returns the last ``(loss, accuracy)``."""
        if self._warm_up_step is None:
            def step(x, labels):
                return self._classifier_update(ops.stop_gradient(self.encoder(x)), labels)
            self._warm_up_step = tf.function(step)
        loss = accuracy = None
        for x, labels in dataset.take(steps):
            loss, accuracy = self._warm_up_step(x, labels)
        return None if loss is None else (float(loss), float(accuracy))

    def get_config(self):
        config = super().get_config()
        config.update(encoder=keras.saving.serialize_keras_object(self.encoder), num_classes=self.num_classes,
                      classifier_steps=self.classifier_steps)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
