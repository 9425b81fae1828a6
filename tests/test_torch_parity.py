"""dim_keras's paper-recipe DIM(L) step against the authors' step (the PyTorch re-implementation of
dim_keras.runs.torch_reference) from the same weights on the same batch: the same loss and gradients, and the
two known differences of arithmetic between the frameworks, measured where they act.

Known answer: two implementations of one objective on one network agree to float32 round-off.  The weights are
drawn by torch and copied into the Keras model (conv kernels OIHW -> HWIO; the fc kernel's rows from torch's
channel-major flatten to Keras's channel-last one; linear kernels transposed)."""
import numpy as np
import pytest

EMBEDDING, BATCH = 64, 8


def _copy_torch_weights(tdim, model):
    """Every weight of ``tdim`` (a TorchDIM) into ``model`` (the paper recipe's DeepInfoMax, built)."""
    variables = {v.path: v for v in model.variables}

    def numpy(tensor):
        return tensor.detach().cpu().numpy()

    def batch_norm(prefix, module):
        for name, tensor in (("gamma", module.weight), ("beta", module.bias), ("moving_mean", module.running_mean),
                             ("moving_variance", module.running_var)):
            variables[f"{prefix}/{name}"].assign(numpy(tensor))

    encoder = tdim.encoder
    for k in (1, 2, 3):
        block = getattr(encoder, f"conv{k}")
        variables[f"conv{k}_conv/kernel"].assign(numpy(block[0].weight).transpose(2, 3, 1, 0))
        batch_norm(f"conv{k}_bn", block[1])
    fc = numpy(encoder.fc[0].weight)  # [1024, C * H * W]: torch flattens NCHW, Keras NHWC
    variables["fc1_dense/kernel"].assign(fc.reshape(1024, 256, 4, 4).transpose(2, 3, 1, 0).reshape(4096, 1024))
    batch_norm("fc1_bn", encoder.fc[1])
    variables["y/kernel"].assign(numpy(encoder.y.weight).T)
    variables["y/bias"].assign(numpy(encoder.y.bias))
    for name, net in (("global", tdim.global_net), ("local", tdim.local_net)):
        prefix = f"local_critic/{name}_embedding"
        variables[f"{prefix}/hidden/kernel"].assign(numpy(net.block_nonlinear[0].weight)[:, :, 0, 0].T)
        batch_norm(f"{prefix}/bn", net.block_nonlinear[1])
        variables[f"{prefix}/out/kernel"].assign(numpy(net.block_nonlinear[3].weight)[:, :, 0, 0].T)
        variables[f"{prefix}/out/bias"].assign(numpy(net.block_nonlinear[3].bias))
        variables[f"{prefix}/shortcut/kernel"].assign(numpy(net.linear_shortcut.weight)[:, :, 0, 0].T)
        variables[f"{prefix}/ln/gamma"].assign(numpy(net.block_ln[1].weight))
        variables[f"{prefix}/ln/beta"].assign(numpy(net.block_ln[1].bias))
    for index, name in ((0, "dense_0"), (2, "dense_1"), (4, "logit")):
        variables[f"prior_discriminator/{name}/kernel"].assign(numpy(tdim.discriminator[index].weight).T)
        variables[f"prior_discriminator/{name}/bias"].assign(numpy(tdim.discriminator[index].bias))
    return variables


def test_the_paper_recipe_step_is_the_authors_step():
    torch = pytest.importorskip("torch")
    from dim_keras.runs import torch_reference as tr
    tr.import_torch(beside_tensorflow=True)
    import tensorflow as tf
    from dim_keras.config import TrainConfig
    from dim_keras.runs.model_setup import build_model

    torch.manual_seed(0)
    tdim = tr.TorchDIM(torch, "cpu", estimator="jsd", embedding_dim=EMBEDDING, gamma=0.1)
    model = build_model(TrainConfig(dataset="cifar10", embedding_dim=EMBEDDING, batch_size=BATCH, seed=0,
                                    jit_compile=False), (32, 32, 3))
    images = np.random.default_rng(0).integers(0, 256, size=(BATCH, 32, 32, 3), dtype=np.uint8)
    model._representation_objective(images / np.float32(255), (), training=False)  # builds the critic
    model.prior_discriminator(np.zeros((BATCH, 64), np.float32))
    variables = _copy_torch_weights(tdim, model)

    # The encoder's objective (eq. 8 with the JSD bound and the prior term) and its gradients.
    trained = [v for v in model.trainable_variables if not v.path.startswith("prior_discriminator")]
    with tf.GradientTape() as tape:
        loss, _, _ = model._representation_objective(tf.constant(images / np.float32(255)), (), training=True)
    gradients = dict(zip([v.path for v in trained], tape.gradient(loss, [v.value for v in trained])))
    features = tdim.encoder(tr.uint8_to_inputs(torch, images))
    local, glob = tr.embed(tdim.local_net, tdim.global_net, features["local"], features["y"])
    torch_loss = tr.fenchel_dual_loss(torch, local, glob) + 0.1 * torch.nn.functional.softplus(
        -tdim.discriminator(torch.sigmoid(features["y"]))).mean()
    torch_loss.backward()
    assert float(loss) == pytest.approx(float(torch_loss.detach()), rel=1e-5)

    def torch_gradient(parameter, layout):
        return layout(parameter.grad.detach().cpu().numpy())

    expected = {
        "conv1_conv/kernel": torch_gradient(tdim.encoder.conv1[0].weight, lambda g: g.transpose(2, 3, 1, 0)),
        "fc1_dense/kernel": torch_gradient(tdim.encoder.fc[0].weight, lambda g: g.reshape(1024, 256, 4, 4)
                                           .transpose(2, 3, 1, 0).reshape(4096, 1024)),
        "fc1_bn/gamma": torch_gradient(tdim.encoder.fc[1].weight, lambda g: g),
        "y/kernel": torch_gradient(tdim.encoder.y.weight, lambda g: g.T),
        "local_critic/global_embedding/hidden/kernel": torch_gradient(
            tdim.global_net.block_nonlinear[0].weight, lambda g: g[:, :, 0, 0].T),
        "local_critic/local_embedding/shortcut/kernel": torch_gradient(
            tdim.local_net.linear_shortcut.weight, lambda g: g[:, :, 0, 0].T),
    }
    for path, want in expected.items():
        got = gradients[path].numpy()
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), path

    # After that training forward, the moving statistics: the same mean (Keras momentum 0.9 is torch's 0.1);
    # the variance differs by Bessel's correction, torch's running variance being the unbiased batch variance
    # and Keras's the biased one, so at batch 64 Keras's inference-mode BN divides by a standard deviation
    # sqrt(63/64) = 0.992 of torch's once the moving averages have forgotten their start.
    pre_bn = tdim.encoder.fc[0](torch.flatten(features["conv"], 1)).detach().cpu().numpy()
    n = BATCH
    np.testing.assert_allclose(variables["fc1_bn/moving_mean"].numpy(), 0.1 * pre_bn.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(variables["fc1_bn/moving_variance"].numpy(), 0.9 + 0.1 * pre_bn.var(0),
                               rtol=1e-4)
    np.testing.assert_allclose(tdim.encoder.fc[1].running_var.detach().cpu().numpy(),
                               0.9 + 0.1 * pre_bn.var(0) * n / (n - 1), rtol=1e-4)
