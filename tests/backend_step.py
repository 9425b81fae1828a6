"""Runs DeepInfoMax training steps on the backend of this process (``KERAS_BACKEND``) from given
weights and writes what came out: the cross-backend equality test (tests/test_backends.py) runs it
once per backend and compares.

    python tests/backend_step.py CASES DIR

``CASES`` is a JSON object ``{name: case}``, each case a JSON object of DeepInfoMax arguments plus
``optimizer`` ("adam" or "sgd"), ``steps`` and ``jit``; every case runs in this one process (one start of
TensorFlow or JAX for all of them).  ``DIR`` holds ``images.npy`` and ``prior.npy``; case ``name`` starts
from ``DIR/name.weights.h5`` (Keras's backend-free weights format; written first when missing) and writes
``DIR/name.<backend>.npz``.  The prior's samples are the fixed array ``PRIOR_SAMPLES`` on both backends:
``keras.random`` draws different numbers on TensorFlow and JAX from the same seed, and the test
compares the update, not the random draws.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from dim_keras import encoders, priors  # noqa: E402
from dim_keras import models as models_lib  # noqa: E402


def build(case):
    keras.utils.set_random_seed(0)
    encoder = encoders.build_encoder("small", (16, 16, 3), y_dim=8, widths=(8, 16, 16), fc_units=32)
    arguments = {k: v for k, v in case.items() if k not in ("optimizer", "steps", "jit")}
    return models_lib.DeepInfoMax(encoder, embedding_dim=16, seed=3, **arguments)


def optimizer(name):
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=0.05)
    return models_lib.default_optimizer()


def main(cases_json, directory):
    backend = keras.backend.backend()
    for name, case in json.loads(cases_json).items():
        run_case(case, os.path.join(directory, f"{name}.weights.h5"), os.path.join(directory, "images.npy"),
                 os.path.join(directory, "prior.npy"), os.path.join(directory, f"{name}.{backend}.npz"))


def run_case(case, weights_in, images_path, prior_path, out_path):
    model = build(case)
    if os.path.exists(weights_in):
        model.load_weights(weights_in)
    else:
        model.save_weights(weights_in)
    fixed_prior = np.load(prior_path)
    # The same prior samples on both backends (see the module docstring).
    priors.sample_prior = lambda prior, batch, dim, seed=None: keras.ops.convert_to_tensor(fixed_prior[:batch])
    model.compile(optimizer=optimizer(case["optimizer"]), discriminator_optimizer=optimizer(case["optimizer"]),
                  jit_compile=case.get("jit", True))
    images = np.load(images_path)
    logs = [model.train_on_batch(images, return_dict=True) for _ in range(case["steps"])]
    arrays = {f"w{k}": np.asarray(v) for k, v in enumerate(model.get_weights())}
    arrays["names"] = np.array([v.path for v in model.weights])
    for name in logs[0]:
        arrays[f"log_{name}"] = np.array([float(step[name]) for step in logs])
    arrays["iterations"] = np.array(int(keras.ops.convert_to_numpy(model.representation_optimizer().iterations)))
    if model.discriminator_optimizer is not None:
        arrays["d_iterations"] = np.array(int(keras.ops.convert_to_numpy(
            model.discriminator_optimizer.iterations)))
    arrays["features_y"] = np.asarray(model.predict(images, verbose=0)["y"])
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
