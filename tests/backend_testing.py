"""Gradients and compiled functions on the active Keras backend, for tests marked ``backends``.

``keras.ops`` covers the math but not differentiation or tracing, which are the backend's own:
``tf.GradientTape`` / ``tf.function`` on TensorFlow, ``jax.value_and_grad`` / ``jax.jit`` on JAX.  These
helpers give the tests one spelling for both, and hand back NumPy arrays.
"""
import keras
import numpy as np


def backend():
    return keras.backend.backend()


def to_numpy(x):
    """A tensor or ``keras.Variable`` as a NumPy array, without NumPy's ``__array__`` deprecation warning
    that ``np.array(variable)`` raises on both backends."""
    if isinstance(x, keras.Variable):
        return x.numpy() if backend() == "tensorflow" else np.asarray(x.value)
    return keras.ops.convert_to_numpy(x)


def value_and_grad(fn, x):
    """``(fn(x), d fn / d x)`` as NumPy arrays; ``fn`` returns a scalar."""
    if backend() == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return value.numpy(), tape.gradient(value, x).numpy()
    if backend() == "jax":
        import jax
        import jax.numpy as jnp

        value, grad = jax.value_and_grad(fn)(jnp.asarray(x))
        return np.asarray(value), np.asarray(grad)
    raise NotImplementedError(f"no gradient helper for the {backend()} backend")


def compiled(fn, example):
    """``fn`` compiled the way a training step compiles it.

    TensorFlow: a ``tf.function`` traced with every dimension of ``example`` unknown (the shape of
    ``model.fit``'s last, partial batch), so static-shape checks cannot run at trace time.  JAX: ``jax.jit``
    (shapes are always static there; a new shape retraces).
    """
    if backend() == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec([None] * np.ndim(example), tf.as_dtype(np.asarray(example).dtype))
        return tf.function(fn).get_concrete_function(spec)
    if backend() == "jax":
        import jax

        return jax.jit(fn)
    raise NotImplementedError(f"no compile helper for the {backend()} backend")


def traced_ops(fn, *args, with_grad=False):
    """``[(op name, element count of each output)]`` of ``fn(*args)`` as the backend traces it, nested
    computations included; ``with_grad``: the trace of ``fn`` and its gradient w.r.t. ``args[0]``.

    TensorFlow: the ops of a ``tf.function`` graph traced at the arguments' static shapes (op types such as
    ``MatMul``, ``While``).  JAX: the equations of ``jax.make_jaxpr`` (primitives such as ``dot_general``,
    ``while``), walking into sub-jaxprs (``jit``, ``custom_jvp_call``, ``cond`` branches ...).
    """
    if backend() == "tensorflow":
        import tensorflow as tf

        def traced(*xs):
            if not with_grad:
                return fn(*xs)
            with tf.GradientTape() as tape:
                tape.watch(xs[0])
                value = fn(*xs)
            return value, tape.gradient(value, xs[0])

        specs = [tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype)) for a in args]
        graph = tf.function(traced).get_concrete_function(*specs).graph
        return [(op.type, [out.shape.num_elements() for out in op.outputs]) for op in graph.get_operations()]
    if backend() == "jax":
        import jax

        target = jax.value_and_grad(fn) if with_grad else fn
        found = []

        def walk(jaxpr):
            for eqn in jaxpr.eqns:
                found.append((eqn.primitive.name,
                              [int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape")]))
                for param in eqn.params.values():
                    for sub in param if isinstance(param, (tuple, list)) else (param,):
                        sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                        if hasattr(sub, "eqns"):
                            walk(sub)

        walk(jax.make_jaxpr(target)(*args).jaxpr)
        return found
    raise NotImplementedError(f"no tracing helper for the {backend()} backend")
