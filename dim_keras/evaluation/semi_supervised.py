"""Semi-supervised fine-tuning of the whole encoder (DIM section 4.1, Table 2 "SS").

Section 4.1: "Semi-supervised learning (STL-10 here), that is, fine-tuning the
complete encoder by adding a small neural network on top of the last
convolutional layer (matching architectures with a standard fully-supervised
classifier)."  The small network is the evaluation classifier of
`dim_keras.evaluation.probes.classifier_head` (200 units, BN, ReLU, dropout
0.1); encoder and head are trained together on the labelled split, and the
test accuracy is averaged over the last epochs (section 4.1 model selection).
"""

import keras
import numpy as np
import tensorflow as tf

from dim_keras.evaluation.probes import (
    LastEpochsAccuracy,
    classifier_head,
    step_decay_schedule,
    summarize,
)


def copy_model(model):
    """An independent copy (architecture and weights) of a functional keras model."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _image_dataset(images, labels, batch_size, shuffle, seed):
    # uint8 stays uint8 in memory (STL-10 as float32 would be 4x larger);
    # the cast to [0, 1] happens per batch.
    data = (images,) if labels is None else (images, labels)
    dataset = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    def to_unit_float(image, *label):
        scale = 255.0 if image.dtype == tf.uint8 else 1.0
        image = tf.cast(image, tf.float32) / scale
        return (image, *label) if label else image

    return dataset.batch(batch_size).map(to_unit_float).prefetch(tf.data.AUTOTUNE)


def fine_tune_accuracy(encoder, train_images, train_labels, test_images, test_labels,
                       epochs=20, last_epochs=5, batch_size=64, learning_rate=1e-4,
                       hidden_units=200, dropout=0.1, feature="conv", copy_encoder=True,
                       seed=0, verbose=0):
    """Test accuracy after fine-tuning ``encoder`` + a small head on labelled images (Table 2, SS).

    Args:
        encoder: keras.Model mapping float32 images in [0, 1] ``[N, H, W, 3]``
            to a dict of features (`dim_keras.encoders.build_encoder`).
        train_images, test_images: uint8 (or float in [0, 1]) ``[N, H, W, 3]``.
        train_labels, test_labels: int class labels ``[N]``.
        epochs, last_epochs: training length; the reported accuracy is the
            mean test accuracy of the last ``last_epochs`` epochs.
        learning_rate: Adam, divided by 10 at 50 % and 75 % of training.
        feature: the encoder output the head sits on ("conv": "on top of the
            last convolutional layer").
        copy_encoder: fine-tune a copy, leaving ``encoder``'s weights untouched.

    Returns:
        ``{"mean", "std", "values"}`` over the last epochs' test accuracies.
    """
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    if train_labels.ndim != 1 or len(train_labels) != len(train_images):
        raise ValueError("fine-tuning needs class labels [N] for every training image")
    if len(test_labels) != len(test_images):
        raise ValueError("test images and labels differ in length")
    keras.utils.set_random_seed(seed)
    if copy_encoder:
        encoder = copy_model(encoder)
    classes, train_index = np.unique(train_labels, return_inverse=True)
    inputs = keras.Input(tuple(np.shape(train_images)[1:]), name="images")
    encoded = encoder(inputs)
    if not isinstance(encoded, dict) or feature not in encoded:
        raise ValueError(f"the encoder must return a dict with a {feature!r} feature")
    if isinstance(getattr(encoder, "output", None), dict):
        # Functional encoder: keep only the layers up to the feature, so the
        # unused fc / Y layers are not handed to the optimizer.
        encoded = keras.Model(encoder.input, encoder.output[feature], name="encoder_trunk")(inputs)
    else:
        encoded = encoded[feature]
    features = keras.layers.Flatten(name="flatten_features")(encoded)
    logits = classifier_head(len(classes), hidden_units, dropout)(features)
    model = keras.Model(inputs, logits, name="semi_supervised")
    train_data = _image_dataset(np.asarray(train_images), train_index.astype(np.int64),
                                batch_size, True, seed)
    test_data = _image_dataset(np.asarray(test_images), None, 256, False, seed)
    steps_per_epoch = -(-len(train_labels) // batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(step_decay_schedule(learning_rate, epochs * steps_per_epoch)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    recorder = LastEpochsAccuracy(test_data, test_labels, classes, epochs, last_epochs)
    model.fit(train_data, epochs=epochs, shuffle=False, callbacks=[recorder], verbose=verbose)
    return summarize(recorder.accuracies)
