"""The number of negatives (DIM App. A.3, Fig. 9): the negative mask, the estimators under it, the model's
``negatives=K``, ``--negatives`` and the Fig. 9 sweep app.

Tests marked ``backends`` run on TensorFlow and on JAX (CI's second leg, ``KERAS_BACKEND=jax``); the sweep
trains through apps/train.py's run (TensorFlow: SavedModel export) and runs on TensorFlow only.
"""
import itertools
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from backend_testing import compiled, to_numpy
from dim_keras import estimators

backends = pytest.mark.backends
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOUNDS = ("jsd", "dv", "nwj", "mine_f", "infonce")


def sp(t):
    return math.log1p(math.exp(t))


# --------------------------------------------------------------------------------------- the mask
@backends
@pytest.mark.parametrize("batch,negatives", [(2, 1), (5, 1), (5, 3), (5, 4), (5, 9), (16, 7)])
def test_every_row_has_exactly_k_negatives_never_the_diagonal(batch, negatives):
    seed = keras.random.SeedGenerator(0)
    for _ in range(3):
        mask = to_numpy(estimators.sample_negative_mask(batch, negatives, seed))
        assert mask.shape == (batch, batch) and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        np.testing.assert_array_equal(mask.sum(axis=1), min(negatives, batch - 1))
        np.testing.assert_array_equal(np.diag(mask), 0.0)


@backends
def test_the_mask_is_a_uniform_k_subset_per_row_drawn_afresh_each_time():
    """B = 5, K = 2: every row is one of the C(4, 2) = 6 subsets of the other images, each with
    probability 1/6, independently of the other rows and of the previous draw."""
    seed = keras.random.SeedGenerator(1)
    draws = np.stack([to_numpy(estimators.sample_negative_mask(5, 2, seed)) for _ in range(300)])
    for row in range(5):
        subsets = {}
        for draw in draws:
            subsets[tuple(np.flatnonzero(draw[row]))] = subsets.get(tuple(np.flatnonzero(draw[row])), 0) + 1
        others = [j for j in range(5) if j != row]
        assert set(subsets) == set(itertools.combinations(others, 2))
        # 300 draws: 50 expected per subset, sd 6.5; 5 sd either side.
        assert all(17 < count < 83 for count in subsets.values()), subsets
    # Rows differ within a draw and draws differ from each other (not one fixed pattern).
    assert len({draw.tobytes() for draw in draws}) > 250
    assert np.mean([np.array_equal(d[0, 1:3], d[1, [0, 2]]) for d in draws]) < 0.6


@backends
def test_the_mask_compiles_with_a_static_k():
    """Under tf.function with an unknown batch (fit's partial batch) and jax.jit; a batch whose B - 1 is
    at most K keeps every other image."""
    seed = keras.random.SeedGenerator(2)
    state = seed.state.value

    def draw(x):  # stateless, as a compiled JAX step draws (the seed's state is mapped, not assigned)
        with keras.StatelessScope(state_mapping=[(seed.state, state)]):
            return estimators.sample_negative_mask(keras.ops.shape(x)[0], 3, seed)

    fn = compiled(draw, np.zeros(6, "f"))
    for batch in (6, 4, 2):
        mask = to_numpy(fn(np.zeros(batch, "f")))
        np.testing.assert_array_equal(mask.sum(axis=1), min(3, batch - 1))
        np.testing.assert_array_equal(np.diag(mask), 0.0)


@backends
def test_bad_k_raises():
    with pytest.raises(ValueError, match="negatives must be an integer >= 1"):
        estimators.sample_negative_mask(4, 0)


# --------------------------------------------------------------------------------- the estimators
# scores[i, j, l] = T(global i, local l of image j): B = 3 images, L = 2 locations.
S = np.array([[[2.0, 1.0], [0.5, -1.0], [3.0, -0.5]],
              [[1.5, -2.0], [1.0, 2.5], [0.0, 1.0]],
              [[-1.0, 2.0], [0.5, 0.0], [0.5, -1.5]]], dtype=np.float32)
# K = 1 negative image per global feature: global 0 -> image 2, 1 -> image 0, 2 -> image 1.
MASK = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
POS = [S[i, i, l] for i in range(3) for l in range(2)]


def _chosen(mask):
    """The negatives of each global feature i: T(i, j, l') over the j of mask row i and all l'."""
    return {i: [float(S[i, j, l]) for j in range(3) if mask[i, j] and j != i for l in range(2)] for i in range(3)}


def by_hand(name, mask):
    negatives = _chosen(mask)
    flat = [t for row in negatives.values() for t in row]
    if name == "jsd":
        return (sum(math.log(2) - sp(-t) for t in POS) / len(POS)
                - sum(sp(t) - math.log(2) for t in flat) / len(flat))
    if name == "dv":
        return sum(POS) / len(POS) - math.log(sum(math.exp(t) for t in flat) / len(flat))
    if name in ("nwj", "mine_f"):
        return sum(POS) / len(POS) - math.exp(-1) * sum(math.exp(t) for t in flat) / len(flat)
    # infoNCE: log(1 + K L) - cross-entropy of the positive against itself + exactly its K L negatives.
    k = int(mask.sum(axis=1)[0])
    cross_entropy = np.mean([math.log(math.exp(S[i, i, l]) + sum(math.exp(t) for t in negatives[i])) - S[i, i, l]
                             for i in range(3) for l in range(2)])
    return math.log(1 + k * 2) - cross_entropy


@backends
@pytest.mark.parametrize("name", BOUNDS)
def test_bounds_under_a_mask_use_exactly_the_chosen_pairs(name):
    """K = 1: each global feature's negatives are the K L = 2 local features of its one chosen image;
    JSD's negative term is the mean over exactly those B K L = 6 entries, infoNCE is log(1 + K L) - CE."""
    assert len([t for row in _chosen(MASK).values() for t in row]) == 6
    value = float(estimators.mi_lower_bound(S, name, negative_mask=MASK))
    assert value == pytest.approx(by_hand(name, MASK), abs=1e-5)
    # The diagonal of a mask is ignored: a positive is never a negative.
    assert float(estimators.mi_lower_bound(S, name, negative_mask=MASK + np.eye(3, dtype="f"))) == value


@backends
@pytest.mark.parametrize("name", BOUNDS)
def test_the_all_ones_mask_is_the_default_and_none_is_the_default_bit_for_bit(name):
    default = to_numpy(estimators.mi_lower_bound(S, name))
    assert default.tobytes() == to_numpy(estimators.mi_lower_bound(S, name, negative_mask=None)).tobytes()
    assert float(default) == pytest.approx(by_hand(name, 1 - np.eye(3)), abs=1e-5)
    every = estimators.mi_lower_bound(S, name, negative_mask=np.ones((3, 3), "f"))
    assert float(every) == pytest.approx(float(default), abs=1e-6)


@backends
def test_masked_infonce_is_at_most_log_1_plus_kl_and_kpair_identity_holds():
    big = np.zeros((3, 3, 2), np.float32) + 40.0 * np.eye(3, dtype=np.float32)[:, :, None]
    assert float(estimators.infonce_lower_bound(big, negative_mask=MASK)) == pytest.approx(math.log(3), abs=1e-5)
    nce = float(estimators.infonce_lower_bound(S, negative_mask=MASK))
    triplet = float(estimators.kpair_triplet_loss(S, negative_mask=MASK))
    assert nce == pytest.approx(math.log(1 + 1 * 2) - triplet, abs=1e-5)
    # DV with the bias-corrected gradient reads the same negatives.
    bound, _, _ = estimators.dv_bias_corrected(S, -math.inf, 0.0, negative_mask=MASK)
    assert float(bound) == pytest.approx(by_hand("dv", MASK), abs=1e-5)


# ------------------------------------------------------------------------------------ the model
def tiny_model(**kwargs):
    import dim_keras as dk
    encoder = dk.build_encoder("dcgan", (16, 16, 3), y_dim=8, widths=(8, 16, 16), fc_units=32)
    return dk.DeepInfoMax(encoder, embedding_dim=16, seed=5, **kwargs)


def images(n, seed=0):
    return np.random.default_rng(seed).random((n, 16, 16, 3)).astype(np.float32)


@backends
def test_model_mi_terms_use_the_drawn_mask_for_both_terms():
    """negatives=2, batch 6: the local and global bounds equal the estimator under the mask that the
    model's seed generator draws (one draw for both terms), and differ from the all-negatives bound."""
    model = tiny_model(alpha=0.5, beta=1.0, gamma=0.0, estimator="infonce", negatives=2)
    features = model.encoder(images(6), training=False)
    state = to_numpy(model.seed_generator.state)
    terms = model.mi_terms(features)
    model.seed_generator.state.assign(state)
    mask = estimators.sample_negative_mask(6, 2, model.seed_generator)
    np.testing.assert_array_equal(to_numpy(mask).sum(axis=1), 2)
    local = model.local_critic(features["y"], model._subsample_locations(features["local"]))
    glob = model.global_critic(features["y"], features["conv"])
    assert float(terms["local_mi"]) == pytest.approx(float(estimators.infonce_lower_bound(local, mask)), abs=1e-5)
    assert float(terms["global_mi"]) == pytest.approx(float(estimators.infonce_lower_bound(glob, mask)), abs=1e-5)
    assert float(terms["local_mi"]) != pytest.approx(float(estimators.infonce_lower_bound(local)), abs=1e-4)
    # At most log(1 + K L) (L = 4 x 4 locations).
    assert float(terms["local_mi"]) <= math.log(1 + 2 * 16) + 1e-5


@backends
def test_fit_with_negatives_trains_on_this_backend():
    """Batch 8, K = 2, under XLA (TF: the batch dimension is dynamic, the
    mask's size comes from the tensor) / jit (JAX, the stateless step); 13 images: a partial batch of 5 too."""
    model = tiny_model(estimator="dv", gamma=0.0, negatives=2)
    model.compile(jit_compile=True)
    history = model.fit(images(13), batch_size=8, epochs=1, verbose=0)
    assert all(np.all(np.isfinite(values)) for values in history.history.values())
    assert int(to_numpy(model.representation_optimizer().iterations)) == 2


@backends
def test_negatives_config_round_trip_and_validation():
    model = tiny_model(negatives=3)
    assert model.get_config()["negatives"] == 3
    assert type(model).from_config(model.get_config()).negatives == 3
    assert tiny_model().get_config()["negatives"] is None
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="negatives must be an integer >= 1"):
            tiny_model(negatives=bad)
    # A static batch with B - 1 <= K draws no mask: the bound of all other images.
    assert model._negative_mask(np.zeros((4, 8), "f")) is None
    assert model._negative_mask(np.zeros((5, 8), "f")) is not None


@backends
def test_train_flag_maps_to_the_model_and_large_k_means_all():
    from dim_keras.config import TrainConfig, validate
    from dim_keras.errors import UsageError
    from dim_keras.runs.model_setup import negatives_of
    assert negatives_of(TrainConfig()) is None
    assert negatives_of(TrainConfig(negatives=8, batch_size=64)) == 8
    assert negatives_of(TrainConfig(negatives=63, batch_size=64)) is None
    assert negatives_of(TrainConfig(negatives=500, batch_size=64)) is None
    with pytest.raises(UsageError, match="--negatives must be >= 1"):
        validate(TrainConfig(negatives=0))


# ---------------------------------------------------------------------------------- the apps
def run_without_tensorflow(app, args):
    from official_formats import WITHOUT_TENSORFLOW
    return subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, os.path.join(ROOT, "apps", app)] + args,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@backends
@pytest.mark.parametrize("app,args,fragment", [
    ("train.py", ["--negatives=0"], "--negatives must be >= 1"),
    ("train.py", ["--negatives=two"], "--negatives"),
    ("negatives_sweep.py", ["--negatives=0"], "--negatives must be >= 1"),
    ("negatives_sweep.py", ["--negatives=4,64"], "at most 63 negative images"),
    ("negatives_sweep.py", ["--negatives=2,2"], "--negatives lists a value twice"),
    ("negatives_sweep.py", ["--estimators=jsd,kl"], "--estimators: unknown value 'kl'"),
    ("negatives_sweep.py", ["--dataset=celeb_a"], "needs class labels"),
])
def test_bad_flags_exit_2_with_one_line(app, args, fragment):
    result = run_without_tensorflow(app, args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{app}: error: ") and fragment in lines[0], result.stderr


@backends
def test_sweep_flags_come_from_its_config_and_help_lists_them_without_tensorflow():
    from absl import flags

    from dim_keras import cli
    from dim_keras.config import NegativesSweepConfig, validate
    values = flags.FlagValues()
    names = cli.define_flags(NegativesSweepConfig, flag_values=values)
    assert len(names) == len(set(names)) and "negatives" in names and "estimators" in names
    values(["prog"])
    assert cli.config_from_flags(NegativesSweepConfig, flag_values=values) == NegativesSweepConfig()
    default = validate(NegativesSweepConfig())
    # B = 64: log2 K = 0 .. 5 and K = B - 1 = 63 (all); DIM(L) with JSD, infoNCE and DV.
    assert default.resolved_negatives() == [1, 2, 4, 8, 16, 32, 63]
    assert default.estimators == ("jsd", "infonce", "dv") and default.train.alpha == 0
    result = run_without_tensorflow("negatives_sweep.py", ["--help"])
    assert result.returncode == 0 and result.stderr == ""
    for field, _, _ in cli.flag_fields(NegativesSweepConfig):
        assert f"--{field.name}:" in result.stdout or f"--[no]{field.name}:" in result.stdout, field.name
    assert "--negatives:" in run_without_tensorflow("train.py", ["--help"]).stdout


@pytest.mark.slow
def test_sweep_writes_json_and_png_and_a_rerun_skips_finished_points(tmp_path):
    """digits, 1 epoch of 2 steps, batch 4, K in {1, 3 = B - 1}, jsd and dv: every point trained with its
    --negatives, probed, and recorded; the rerun trains nothing and gives the same points."""
    from dim_keras.config import NegativesSweepConfig
    from dim_keras.runs import negatives_sweep

    config = NegativesSweepConfig(output_dir=str(tmp_path / "sweep"), estimators=("jsd", "dv"), negatives=(3, 1))
    config.train.dataset, config.train.epochs, config.train.steps_per_epoch = "digits", 1, 2
    config.train.batch_size, config.train.embedding_dim, config.train.y_dim = 4, 16, 8
    config.train.probe_max_train, config.train.jit_compile, config.train.verbose = 20, False, 0
    result = negatives_sweep.sweep(config, log=lambda *a: None)
    assert result["trained"] == 4 and result["negatives"] == [1, 3]
    assert [(p["estimator"], p["negatives"]) for p in result["points"]] == [
        ("jsd", 1), ("jsd", 3), ("dv", 1), ("dv", 3)]
    for point in result["points"]:
        assert point["log2_negatives"] == math.log2(point["negatives"])
        assert point["all_negatives"] == (point["negatives"] == 3)
        if point["diverged"] is None:
            assert all(0.0 <= point["probe"][name] <= 1.0 for name in ("y", "fc", "conv"))
        with open(os.path.join(point["output_dir"], "config.json")) as handle:
            run = json.load(handle)
        assert (run["estimator"], run["negatives"]) == (point["estimator"], point["negatives"])
    with open(tmp_path / "sweep" / "negatives.json") as handle:
        saved = json.load(handle)
    assert len(saved["points"]) == 4 and saved["batch_size"] == 4
    with open(tmp_path / "sweep" / "negatives.png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    rerun = negatives_sweep.sweep(config, log=lambda *a: None)
    assert rerun["trained"] == 0
    assert [p.get("probe") for p in rerun["points"]] == [p.get("probe") for p in result["points"]]
    assert "| 1 | 0.00 |" in negatives_sweep.table(rerun)
    # Another setting in the same directory is refused, not mixed in.
    config.train.seed = 1
    with pytest.raises(Exception, match="finished point with other settings \\(seed\\)"):
        negatives_sweep.sweep(config, log=lambda *a: None)
