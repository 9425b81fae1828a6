"""The training run's linear probe (dim_keras.runs.train): known answers on synthetic features."""
import numpy as np

from dim_keras.runs import train as train_run


def test_first_per_class_takes_exactly_the_first_examples_of_each_class():
    labels = np.array([2, 0, 2, 1, 0, 2, 1, 0])
    assert train_run._first_per_class(labels, 2).tolist() == [0, 1, 2, 3, 4, 6]
    assert train_run._first_per_class(labels, 5).tolist() == list(range(8))  # fewer than asked: all


def test_probe_columns_on_an_encoder_whose_y_is_the_class_and_whose_fc_is_noise():
    classes, per_class = 5, 60

    def split(n_per_class):
        labels = np.repeat(np.arange(classes), n_per_class)
        images = np.broadcast_to((40 * labels)[:, None, None, None], (len(labels), 4, 4, 3)).astype(np.uint8)
        return images.copy(), labels

    train_images, train_labels = split(per_class)
    test_images, test_labels = split(20)
    noise = np.random.default_rng(1)

    def encoder_fn(images):
        n = len(images)
        return {"y": images[:, 0, 0, :1].astype(np.float32),  # the class, linearly
                "fc": noise.standard_normal((n, 8)).astype(np.float32),  # nothing
                "conv": images.reshape(n, -1).astype(np.float32)}

    probe = train_run.linear_probe(encoder_fn, (train_images, train_labels, test_images, test_labels))
    assert probe["y"] == {"all_labels": 1.0, "20_labels_per_class": 1.0}
    assert probe["conv"]["all_labels"] == 1.0
    # Noise features: chance level (1/5), far from the informative ones.
    assert probe["fc"]["all_labels"] < 0.4 and probe["fc"]["20_labels_per_class"] < 0.4
    table = train_run.probe_table({"random_init": probe, "trained": probe})
    assert table.splitlines()[2] == "| y | 100.00 % | 100.00 % | 100.00 % | 100.00 % |"
