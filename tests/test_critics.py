"""Critics: score layout, the single batched matmul, and architecture details.

Every test here runs on TensorFlow and on JAX (``backends`` marker; CI's second leg)."""
import numpy as np
import pytest
import keras

from backend_testing import backend, to_numpy as _np, traced_ops
from dim_keras import critics

pytestmark = pytest.mark.backends



def _inputs(batch=3, h=4, w=4, c=5, d=6):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(batch, d)).astype(np.float32),
            rng.normal(size=(batch, h, w, c)).astype(np.float32))


ALL = [critics.EncodeAndDotCritic(16), critics.ConcatAndConvolveCritic((8, 8)),
       critics.BilinearCritic(), critics.SeparableCritic(8, hidden_units=(8,))]


@pytest.mark.parametrize("critic", ALL, ids=lambda c: type(c).__name__)
def test_scores_layout_matches_pairwise_evaluation(critic):
    """scores[i, j, l] == T(global_i, local_{j,l}), checked pair by pair."""
    y, local = _inputs()
    scores = _np(critic(y, local))
    assert scores.shape == (3, 3, 16)
    flat = local.reshape(3, 16, 5)
    for i in range(3):
        for j in range(3):
            # Score image j's locations against global i alone: a batch of one
            # pair (both "images" are the same) gives T on the diagonal.
            single = _np(critic(y[i:i + 1], flat[j:j + 1].reshape(1, 4, 4, 5)))[0, 0]
            np.testing.assert_allclose(scores[i, j], single, rtol=1e-4, atol=1e-4)


def test_encode_and_dot_uses_one_matmul_and_no_loops():
    """The traced critic call: one matmul per embedding Dense layer plus ONE for
    all B x B x L pair scores, and no loop.  Scoring pair by pair would unroll
    into B*B more matmuls for a static batch, or a While loop for a symbolic one
    (TF's unknown batch; JAX always traces static shapes)."""
    critic = critics.EncodeAndDotCritic(16, batch_norm=False)
    y, local = _inputs()
    critic(y, local)
    dense_layers = [w for w in critic.weights if w.path.endswith("kernel")]
    assert len(dense_layers) == 6  # hidden, out, shortcut of both embeddings
    matmuls = ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "dot_general")
    loops = ("While", "StatelessWhile", "For", "while", "scan")
    types = [name for name, _ in traced_ops(critic.__call__, y, local)]
    assert sum(t in matmuls for t in types) == len(dense_layers) + 1
    assert not any(t in loops for t in types)
    if backend() == "tensorflow":
        import tensorflow as tf

        graph = tf.function(critic.__call__).get_concrete_function(
            tf.TensorSpec([None, 6]), tf.TensorSpec([None, 4, 4, 5])).graph
        types = [op.type for op in graph.get_operations()]
        assert sum(t in matmuls for t in types) == len(dense_layers) + 1
        assert not any(t in loops for t in types)


def test_encode_and_dot_architecture():
    critic = critics.EncodeAndDotCritic(32)
    y, local = _inputs()
    critic(y, local)
    g, l = critic.global_embedding, critic.local_embedding
    assert g.ln is None and l.ln is not None  # "Block Layer Norm" on locals only (Table 9)
    assert g.hidden.units == g.out.units == g.shortcut.units == 32
    # Shortcut initialised near identity.
    kernel = _np(l.shortcut.kernel)
    np.testing.assert_array_equal(np.diag(kernel[:, :5]), np.ones(5))
    assert np.abs(kernel - np.eye(5, 32)).max() <= 0.01


def test_concat_critic_equals_explicit_concatenation():
    """The split first layer equals Table 7's net on explicit [C(x_j), E(x_i)]."""
    critic = critics.ConcatAndConvolveCritic((8, 8))
    y, local = _inputs()
    scores = _np(critic(y, local))
    w = np.concatenate([_np(critic.local_projection.kernel),
                        _np(critic.global_projection.kernel)])
    b = _np(critic.local_projection.bias)
    i, j, loc = 2, 0, 5
    pair = np.concatenate([local.reshape(3, 16, 5)[j, loc], y[i]])
    h = np.maximum(pair @ w + b, 0)
    h = np.maximum(h @ _np(critic.hidden[0].kernel) + _np(critic.hidden[0].bias), 0)
    expected = h @ _np(critic.score.kernel) + _np(critic.score.bias)
    assert scores[i, j, loc] == pytest.approx(float(expected[0]), abs=1e-4)


def test_global_critic_table6_shapes():
    critic = critics.GlobalCritic()
    y, conv = _inputs()
    scores = critic(y, conv)
    assert scores.shape == (3, 3, 1)
    assert critic.local_projection.kernel.shape == (4 * 4 * 5, 512)
    assert [l.units for l in critic.hidden] == [512]


def test_bilinear_is_xWy():
    critic = critics.BilinearCritic()
    y, local = _inputs()
    scores = _np(critic(y, local))
    w = _np(critic.projection.kernel)
    assert scores[1, 2, 3] == pytest.approx(float(y[1] @ w @ local.reshape(3, 16, 5)[2, 3]), abs=1e-4)


@pytest.mark.parametrize("critic", ALL[:1] + ALL[2:], ids=lambda c: type(c).__name__)
def test_vector_pairs_have_one_location(critic):
    critic = type(critic).from_config(critic.get_config())
    y, _ = _inputs()
    assert critic(y, y[:, :5]).shape == (3, 3, 1)


def test_build_critic_names():
    for name in critics.CRITICS:
        assert isinstance(critics.build_critic(name, 16), keras.layers.Layer)
    with pytest.raises(ValueError, match="unknown critic"):
        critics.build_critic("mlp")
