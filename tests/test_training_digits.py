"""A few hundred DIM(L) steps on scikit-learn's digits learn a useful Y."""
import numpy as np
import keras
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import dim_keras as dk
from dim_keras.data import load_split, make_dataset

LABELS_PER_CLASS = 20


def probe_accuracy(encoder, train, test):
    """Linear probe on Y with few labels: random conv features of digits are
    already ~94 % separable with all 1438 labels, so the label-scarce probe is
    where a learned representation shows."""
    def feats(split):
        return encoder.predict(split.images.astype(np.float32) / 255.0, batch_size=256, verbose=0)["y"]
    keep = np.concatenate([np.flatnonzero(train.labels == c)[:LABELS_PER_CLASS] for c in range(10)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(feats(train)[keep], train.labels[keep])
    return clf.score(feats(test), test.labels)


def test_dim_on_digits_raises_local_mi_and_probe_accuracy():
    train, test = load_split("digits", "train"), load_split("digits", "test")
    encoder = dk.build_encoder("dcgan", (32, 32, 3), widths=(16, 32, 64), fc_units=128, y_dim=32)
    model = dk.DeepInfoMax(encoder, alpha=0.0, beta=1.0, gamma=0.1, embedding_dim=128, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5), jit_compile=True)
    random_accuracy = probe_accuracy(encoder, train, test)
    data = make_dataset(train.images, batch_size=64, training=True, seed=0).repeat()
    history = model.fit(data, steps_per_epoch=100, epochs=3, verbose=0)
    trained_accuracy = probe_accuracy(encoder, train, test)
    local_mi = history.history["local_mi"]
    print(f"\nlocal MI bound (JSD, nats) per 100 steps: {[round(v, 3) for v in local_mi]}; "
          f"linear probe on Y ({LABELS_PER_CLASS} labels/class): random init "
          f"{random_accuracy:.3f}, after 300 DIM steps {trained_accuracy:.3f}")
    assert local_mi[-1] > local_mi[0] + 0.3
    assert trained_accuracy > random_accuracy + 0.03
