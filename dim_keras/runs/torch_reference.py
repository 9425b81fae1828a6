"""PyTorch re-implementation of the authors' DIM(L): the training step, a seeded training loop and the
encoder's features (no TensorFlow import).

The authors' code (rdevon/DIM, PyTorch on their ``cortex`` framework) is not vendored in this repository.
This module re-implements what a local-DIM run on CIFAR-10 executes, so that

- ``apps/benchmark.py --compare_torch`` / ``apps/torch_reference.py`` can time the step side by side with
  :class:`dim_keras.DeepInfoMax` (:func:`torch_reference`), and
- ``apps/compare_quality.py`` can train it on the same images for the same epochs and probe its features with
  the same linear protocol (:func:`train_torch_dim`, :func:`torch_encoder_fn`).

What was checked in the authors' code (rdevon/DIM at HEAD ``bac4765``, rdevon/cortex at HEAD ``2837b22``):

- the encoder, ``cortex_DIM/configs/convnets.py`` ``_basic32x32`` (Table 1): conv 64, 128, 256 (4x4, stride 2,
  padding 1), each BN + ReLU; flatten; fc 1024 BN + ReLU; ``cortex_DIM/models/controller.py`` appends the
  linear Y (``output_units=64``, no BN, no activation).  ``cortex_DIM/nn_modules/convnet.py`` gives a conv or
  linear layer a bias only without BN (``bias = not bn``): the three convs and the fc have none, Y has one.
  ``local_task_idx=(1, -1)``: the local map is the 2nd conv block's output (after BN + ReLU), 128 x 8 x 8, the
  global one is Y.  ``classifier_idx=dict(conv=2, fc=4, glob=-1)``: the features the authors evaluate are
  the 3rd conv block's output (256 x 4 x 4, after ReLU), the fc block's (1024, after ReLU) and Y; they are
  the ``conv``, ``fc`` and ``y`` of :func:`torch_encoder_fn`, the same taps as dim_keras's encoders;
- ``LocalDIM.build`` (``cortex_DIM/models/dim.py``): the local map goes through ``MI1x1ConvNet(128, 2048)``
  and Y, reshaped to a 1 x 1 map (``G[:, :, None, None]``), through its own ``MI1x1ConvNet(64, 2048)``:
  **the global embedding is the same 1x1 block as the local one, layer norm included**, not ``MIFCNet``
  (which no model of the authors' DIM uses at HEAD);
- ``MI1x1ConvNet`` (``cortex_DIM/nn_modules/mi_networks.py``, Table 9): 1x1 conv (no bias) -> BN -> ReLU ->
  1x1 conv (bias), plus a 1x1 linear shortcut (no bias) initialised to a noisy identity (U(-0.01, 0.01),
  ones on the diagonal) when it has at least as many outputs as inputs, then LayerNorm over channels;
- ``fenchel_dual_loss`` with the ``JSD`` measure (``cortex_DIM/functions/dim_losses.py``,
  ``cortex_DIM/functions/gan_losses.py``): one ``mm`` over (N * globals) x (N * locals), the positive term
  ``log 2 - softplus(-T)`` and negative term ``softplus(-T) + T - log 2``, averaged over locations, then
  over the N positives and the N(N-1) negatives with exact 0/1 masks; loss = E_neg - E_pos (= minus
  :func:`dim_keras.estimators.jsd_lower_bound` of the same scores);
- training (``LocalDIM.defaults``, cortex's ``_lib/optimizer.py`` and ``_lib/data/data_handler.py``): batch
  64, ``skip_last_batch=True`` (the last partial batch is dropped), a ``DataLoader`` with ``shuffle=True``
  (a new order every epoch), Adam with learning rate 1e-4 and cortex's default betas (0.5, 0.999);
- inputs (cortex's ``built_ins/datasets/torchvision_datasets.py`` and ``utils.build_transforms``): CIFAR-10
  goes through ``ToTensor`` and ``Normalize((0.5,) * 3, (0.5,) * 3)``, i.e. pixels in [-1, 1], with no
  crop or flip (the README's CIFAR-10 command passes no ``--data_args``); dim_keras's encoders map their
  [0, 1] input to the same range;
- the online classifiers of ``cortex_DIM/evaluation_models/classification_eval.py`` see ``output.detach()``:
  they do not train the encoder, so leaving them out changes nothing the encoder learns;
- weights and BN: torch's own defaults (kaiming-uniform init, BN momentum 0.1 and eps 1e-5, LayerNorm eps
  1e-5) are what the authors' step runs with (their code sets none), so this module keeps them.

Also here: ``infonce_loss`` (eq. 5) in the authors' tensor layout but with an exact ``-inf`` mask instead of
their ``-10`` shift (no mask once scores reach the hundreds; the same amount of work), and prior matching
(eq. 7, Table 10): ``sigmoid(Y)`` against a uniform prior on [0, 1]^y_dim, discriminator 1000-200-1,
non-saturating encoder loss, the discriminator trained on ``Y.detach()`` (optionally with the authors'
gradient penalty on real and fake inputs), with its own Adam (1e-4, betas (0.5, 0.999)).

The module imports torch on use and, of dim_keras, only the TF-free modules, so it also runs on a machine
that has PyTorch but no TF.  :func:`torch_reference` (a :class:`TorchReferenceConfig` in, a dict of timings
out) is ``apps/torch_reference.py``'s run.
"""

import math
import os
import sys
import time

from dim_keras.config import to_dict
from dim_keras.errors import UsageError
from dim_keras.runs import timing

ADAM_BETAS = (0.5, 0.999)  # cortex's default for Adam (cortex/_lib/optimizer.py), easy to miss
PROBE_TAPS = ("conv", "fc", "y")


def import_torch(beside_tensorflow=False):
    """The torch module; UsageError (one line) when it is not installed.

    In a process that has loaded TensorFlow, or will (``beside_tensorflow``), triton is kept out first: its
    LLVM (``triton._C.libtriton``) crashes the process with a segmentation fault when it loads after
    TensorFlow's (seen with torch 2.14.1+cu130, triton 3.8.0, TF 2.21), and torch imports it lazily on the
    first optimizer (``torch._dynamo`` asks ``has_triton_package()``) only to offer ``torch.compile``'s GPU
    kernels, which this module never uses.  Where triton was loaded before TensorFlow it is left alone.
    """
    if (beside_tensorflow or sys.modules.get("tensorflow") is not None) and "triton" not in sys.modules:
        sys.modules["triton"] = None  # `import triton` raises ImportError: torch then runs without it
    try:
        import torch
    except ImportError:
        raise UsageError("PyTorch is not installed (pip install torch)") from None
    return torch


def build_networks(torch, image_size=32, embedding_dim=2048, y_dim=64):
    """The authors' CIFAR encoder, the local and global ``MI1x1ConvNet`` and the prior discriminator."""
    nn = torch.nn

    class Encoder(nn.Module):
        """Table 1 / ``_basic32x32`` + Y: conv 64-128-256 (4x4 s2 p1, BN, ReLU), fc 1024 (BN, ReLU), linear Y.

        ``forward`` returns every tap: ``local`` (2nd conv block), ``conv`` (3rd), ``fc`` and ``y``.
        """

        def __init__(self):
            super().__init__()
            # No bias before BN: the authors' Convnet sets bias = not bn.
            self.conv1 = nn.Sequential(nn.Conv2d(3, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
            self.conv2 = nn.Sequential(nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU())
            self.conv3 = nn.Sequential(nn.Conv2d(128, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU())
            flat = 256 * (image_size // 8) ** 2
            self.fc = nn.Sequential(nn.Linear(flat, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU())
            self.y = nn.Linear(1024, y_dim)  # the controller's top layer: no BN, so a bias

        def forward(self, x):
            local = self.conv2(self.conv1(x))
            conv = self.conv3(local)
            fc = self.fc(torch.flatten(conv, 1))
            return {"local": local, "conv": conv, "fc": fc, "y": self.y(fc)}

    class Permute(nn.Module):
        def __init__(self, *perm):
            super().__init__()
            self.perm = perm

        def forward(self, x):
            return x.permute(*self.perm)

    class MI1x1ConvNet(nn.Module):
        """The authors' MI1x1ConvNet (Table 9), for the local map and for Y as a 1x1 map alike."""

        def __init__(self, n_input, n_units):
            super().__init__()
            self.block_nonlinear = nn.Sequential(
                nn.Conv2d(n_input, n_units, 1, bias=False), nn.BatchNorm2d(n_units), nn.ReLU(),
                nn.Conv2d(n_units, n_units, 1, bias=True))
            self.block_ln = nn.Sequential(Permute(0, 2, 3, 1), nn.LayerNorm(n_units), Permute(0, 3, 1, 2))
            self.linear_shortcut = nn.Conv2d(n_input, n_units, 1, bias=False)
            if n_units >= n_input:  # "initialize shortcut to be like identity (if possible)"
                eye = torch.zeros(n_units, n_input, 1, 1, dtype=torch.bool)
                eye[torch.arange(n_input), torch.arange(n_input)] = True
                with torch.no_grad():
                    self.linear_shortcut.weight.uniform_(-0.01, 0.01).masked_fill_(eye, 1.0)

        def forward(self, x):
            return self.block_ln(self.block_nonlinear(x) + self.linear_shortcut(x))

    encoder = Encoder()
    local_net = MI1x1ConvNet(128, embedding_dim)
    global_net = MI1x1ConvNet(y_dim, embedding_dim)  # LocalDIM.build: MI1x1ConvNet on Y[:, :, None, None]
    discriminator = nn.Sequential(nn.Linear(y_dim, 1000), nn.ReLU(), nn.Linear(1000, 200), nn.ReLU(),
                                  nn.Linear(200, 1))
    return encoder, local_net, global_net, discriminator


def embed(local_net, global_net, local, y):
    """``LocalDIM``'s ``extract``: ``(l [N, units, locals], m [N, units, 1])`` from the local map and Y."""
    l = local_net(local)
    m = global_net(y[:, :, None, None])  # "All globals are reshaped as 1x1 feature maps."
    n, units = l.shape[:2]
    return l.reshape(n, units, -1), m.reshape(n, units, -1)


def pair_scores(torch, l, m):
    """All pair scores ``u[i, j, loc, g] = m[i, :, g] . l[j, :, loc]`` from one matmul, as the authors do."""
    n, units, n_locals = l.shape
    n_multis = m.shape[2]
    l = l.permute(0, 2, 1).reshape(-1, units)
    m = m.permute(0, 2, 1).reshape(-1, units)
    return torch.mm(m, l.t()).reshape(n, n_multis, n, n_locals).permute(0, 2, 3, 1)


def fenchel_dual_loss_from_scores(torch, u):
    """The authors' JSD loss E_neg - E_pos of scores ``u [N (globals' image), N (locals' image), locals,
    globals]``; equals ``-dim_keras.estimators.jsd_lower_bound(u[..., 0])`` for one global."""
    F = torch.nn.functional
    n = u.shape[0]
    mask = torch.eye(n, device=u.device, dtype=u.dtype)
    n_mask = 1 - mask
    log_2 = math.log(2.0)
    e_pos = (log_2 - F.softplus(-u)).mean(2).mean(2)
    e_neg = (F.softplus(-u) + u - log_2).mean(2).mean(2)
    e_pos = (e_pos * mask).sum() / mask.sum()
    e_neg = (e_neg * n_mask).sum() / n_mask.sum()
    return e_neg - e_pos


def fenchel_dual_loss(torch, l, m):
    """The authors' JSD loss: l [N, units, locals], m [N, units, globals] -> E_neg - E_pos."""
    return fenchel_dual_loss_from_scores(torch, pair_scores(torch, l, m))


def infonce_loss(torch, l, m):
    """The authors' infoNCE loss layout, with exact masking of same-image pairs."""
    F = torch.nn.functional
    n, units, n_locals = l.shape
    n_multis = m.shape[2]
    l_p = l.permute(0, 2, 1)
    m_p = m.permute(0, 2, 1)
    l_n = l_p.reshape(-1, units)
    m_n = m_p.reshape(-1, units)
    u_p = torch.matmul(l_p, m).unsqueeze(2)  # [N, locals, 1, multis]
    u_n = torch.mm(m_n, l_n.t()).reshape(n, n_multis, n, n_locals).permute(0, 2, 3, 1)
    self_pairs = torch.eye(n, dtype=torch.bool, device=u_n.device)[:, :, None, None]
    u_n = u_n.masked_fill(self_pairs, -math.inf)
    u_n = u_n.reshape(n, n * n_locals, n_multis).unsqueeze(1).expand(-1, n_locals, -1, -1)
    pred_log = F.log_softmax(torch.cat([u_p, u_n], dim=2), dim=2)
    return -pred_log[:, :, 0].mean()


class TorchDIM:
    """The authors' DIM(L) step: encoder + MI networks (one Adam), then the prior discriminator (its own)."""

    def __init__(self, torch, device, estimator="jsd", image_size=32, embedding_dim=2048, gamma=0.1,
                 prior_gradient_penalty=0.0, channels_last=False, y_dim=64, learning_rate=1e-4):
        self.torch = torch
        self.device = device
        self.estimator = estimator
        self.gamma = gamma
        self.prior_gradient_penalty = prior_gradient_penalty
        nets = build_networks(torch, image_size, embedding_dim, y_dim)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.encoder, self.local_net, self.global_net, self.discriminator = (
            net.to(device=device, memory_format=memory_format) for net in nets)
        self.memory_format = memory_format
        # The MI networks are attributes of the authors' BigEncoder, so one optimizer updates all three.
        self.optimizer = torch.optim.Adam(
            [*self.encoder.parameters(), *self.local_net.parameters(), *self.global_net.parameters()],
            lr=learning_rate, betas=ADAM_BETAS)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=learning_rate, betas=ADAM_BETAS)
        self.train()

    def networks(self):
        return self.encoder, self.local_net, self.global_net, self.discriminator

    NETWORK_NAMES = ("encoder", "local_net", "global_net", "discriminator")

    def save(self, path):
        """Writes every network's ``state_dict`` (BN running statistics included) to ``path`` with
        ``torch.save``, atomically: the trained authors' step kept for inspection next to its probe."""
        from dim_keras import io
        states = {name: net.state_dict() for name, net in zip(self.NETWORK_NAMES, self.networks())}
        with io.atomic_path(path) as tmp:
            self.torch.save(states, tmp)

    def load(self, path):
        """Restores the networks :meth:`save` wrote (the optimizers' states are not kept)."""
        states = self.torch.load(path, map_location=self.device, weights_only=True)
        for name, net in zip(self.NETWORK_NAMES, self.networks()):
            net.load_state_dict(states[name])
        return self

    def train(self, mode=True):
        for net in self.networks():
            net.train(mode)

    def train_step(self, images):
        """One update on float NCHW ``images`` in [-1, 1]; returns the encoder's loss (a 0-d tensor)."""
        torch = self.torch
        F = torch.nn.functional
        self.optimizer.zero_grad(set_to_none=True)
        features = self.encoder(images)
        y = features["y"]
        l, m = embed(self.local_net, self.global_net, features["local"], y)
        if self.estimator == "jsd":
            loss = fenchel_dual_loss(torch, l, m)
        else:
            loss = infonce_loss(torch, l, m)
        prior_y = None
        if self.gamma > 0:
            prior_y = torch.sigmoid(y)
            loss = loss + self.gamma * F.softplus(-self.discriminator(prior_y)).mean()
        loss.backward()
        self.optimizer.step()
        if self.gamma > 0:
            self.d_optimizer.zero_grad(set_to_none=True)
            real = torch.rand_like(prior_y)
            fake = prior_y.detach()
            if self.prior_gradient_penalty > 0:
                real.requires_grad_(True)
                fake.requires_grad_(True)
            real_logits = self.discriminator(real)
            fake_logits = self.discriminator(fake)
            d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
            if self.prior_gradient_penalty > 0:
                grad_real, grad_fake = torch.autograd.grad(
                    [real_logits.sum(), fake_logits.sum()], [real, fake], create_graph=True)
                penalty = grad_real.pow(2).sum(1).mean() + grad_fake.pow(2).sum(1).mean()
                d_loss = d_loss + self.prior_gradient_penalty * penalty
            d_loss.backward()
            self.d_optimizer.step()
        return loss


def uint8_to_inputs(torch, images_uint8, device=None):
    """uint8 images ``[N, H, W, 3]`` (numpy or a uint8 tensor) -> float NCHW in [-1, 1], as cortex's
    ``ToTensor()`` + ``Normalize((0.5,) * 3, (0.5,) * 3)`` make them."""
    images = torch.as_tensor(images_uint8)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {tuple(images.shape)}")
    images = images.to(device) if device is not None else images
    return images.permute(0, 3, 1, 2).float().div(255.0).sub(0.5).div(0.5).contiguous()


def check_torch_images(images):
    """UsageError unless the authors' CIFAR encoder takes ``images`` (uint8 [N, H, W, 3], square, side a
    multiple of 8 and >= 16)."""
    check_torch_input_shape(tuple(images.shape))


def check_torch_input_shape(shape):
    """:func:`check_torch_images` on a shape ``[N, H, W, C]`` (before any image is loaded)."""
    if len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2] or shape[1] % 8 or shape[1] < 16:
        raise UsageError(f"the torch reference is the authors' CIFAR encoder: it needs square images whose side "
                         f"is a multiple of 8 and >= 16 (32x32 in the paper), got {shape[1:]}")


def train_torch_dim(images, epochs, seed=0, batch_size=64, steps_per_epoch=None, threads=0, device="cpu",
                    estimator="jsd", gamma=0.0, embedding_dim=2048, y_dim=64, learning_rate=1e-4, log=None):
    """Trains the authors' DIM(L) step on ``images`` (uint8 ``[N, H, W, 3]``) for ``epochs`` epochs.

    As the authors' LocalDIM trains (see the module docstring): batches of ``batch_size`` (64) in a new
    random order every epoch, the last partial batch dropped, Adam 1e-4 with betas (0.5, 0.999), no
    augmentation.  ``gamma=0`` (default) leaves the prior term out: DIM(L) without prior matching.
    ``seed`` seeds the weights (``torch.manual_seed``), the epochs' orders (a ``torch.Generator``) and the
    prior's samples.  ``threads`` > 0 calls ``torch.set_num_threads``; 0 keeps what the caller set.
    ``steps_per_epoch`` caps the steps per epoch (quick runs).

    Returns ``{"model": TorchDIM, "history": [{"epoch", "loss", "steps", "wall_s", "images_per_s"}],
    "wall_s", "images_per_s", "steps", "threads", "device", "torch_version"}``; ``loss`` is the epoch's mean
    encoder loss (for JSD without prior, minus the JSD bound in nats).
    """
    torch = import_torch()
    check_torch_images(images)
    if threads:
        torch.set_num_threads(threads)
    count = len(images)
    steps = count // batch_size
    if steps_per_epoch:
        steps = min(steps, steps_per_epoch)
    if steps < 1:
        raise UsageError(f"{count} images are fewer than one batch of {batch_size}")
    torch.manual_seed(seed)
    device = torch.device(device)
    dim = TorchDIM(torch, device, estimator=estimator, image_size=images.shape[1], embedding_dim=embedding_dim,
                   gamma=gamma, y_dim=y_dim, learning_rate=learning_rate)
    data = torch.as_tensor(images).to(device)  # uint8, converted batch by batch (CIFAR's 50k stay 150 MB)
    order = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        dim.train()
        permutation = torch.randperm(count, generator=order)  # DataLoader(shuffle=True): new order each epoch
        total, start = 0.0, time.perf_counter()
        for step in range(steps):  # skip_last_batch: only full batches
            index = permutation[step * batch_size:(step + 1) * batch_size].to(device)
            total += float(dim.train_step(uint8_to_inputs(torch, data[index])).item())
        wall_s = time.perf_counter() - start
        history.append({"epoch": epoch, "loss": total / steps, "steps": steps, "wall_s": wall_s,
                        "images_per_s": steps * batch_size / wall_s})
        if log is not None:
            log(f"torch epoch {epoch}/{epochs}: loss {total / steps:.4f}, {steps * batch_size / wall_s:.1f} images/s")
    wall_s = sum(h["wall_s"] for h in history)
    return {"model": dim, "history": history, "wall_s": wall_s, "steps": steps * epochs,
            "images_per_s": steps * epochs * batch_size / wall_s, "threads": torch.get_num_threads(),
            "device": str(device), "torch_version": torch.__version__}


def torch_encoder_fn(dim):
    """``encoder_fn(uint8 batch [n, H, W, 3]) -> {"conv", "fc", "y"}`` (numpy) of a :class:`TorchDIM`'s
    encoder in inference mode (``eval()``: BN with its running statistics; no gradients).

    ``conv`` is the 3rd conv block's output flattened (256 x 4 x 4, channel-major), ``fc`` the fc block's
    1024 units after ReLU, ``y`` the representation: the authors' ``classifier_idx`` taps and dim_keras's.
    The encoder's train/eval mode is restored after each call.
    """
    torch = dim.torch
    encoder = dim.encoder

    def encoder_fn(images_uint8):
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad():
                features = encoder(uint8_to_inputs(torch, images_uint8, dim.device))
        finally:
            encoder.train(was_training)
        return {name: torch.flatten(features[name], 1).cpu().numpy() for name in PROBE_TAPS}

    return encoder_fn


def training_flops_per_image(image_size=32, embedding_dim=2048, batch_size=64, gamma=0.1, y_dim=64):
    """Analytic FLOPs per training image of the step above: 3 x forward (multiply-add = 2 FLOPs).

    Counted like :func:`dim_keras.runs.benchmark.training_flops_per_image` counts the Keras model,
    so the two agree for the paper's configuration: the convolutions, linear layers and the score matmul
    (normalisations and activations are not counted; the global ``MI1x1ConvNet`` on a 1x1 map costs what a
    fully connected block of the same widths does).
    """
    s = image_size
    conv = (2 * (s // 2) ** 2 * 16 * 3 * 64 + 2 * (s // 4) ** 2 * 16 * 64 * 128
            + 2 * (s // 8) ** 2 * 16 * 128 * 256)
    fc = 2 * 256 * (s // 8) ** 2 * 1024 + 2 * 1024 * y_dim
    locations = (s // 4) ** 2
    d = embedding_dim
    local_net = locations * 2 * (128 * d + d * d + 128 * d)
    global_net = 2 * (y_dim * d + d * d + y_dim * d)
    scores = 2 * batch_size * locations * d
    prior = 2 * (y_dim * 1000 + 1000 * 200 + 200) * (3 if gamma > 0 else 0)
    return 3 * (conv + fc + local_net + global_net + scores + prior)


def torch_reference(config):
    """Times ``config.steps`` training steps after ``config.warmup``; returns a dict of results.

    ``config`` is a validated :class:`dim_keras.config.TorchReferenceConfig`.  Raises UsageError when
    torch is missing or ``--device=cuda`` has no CUDA device.
    """
    torch = import_torch()
    threads = config.threads or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device=cuda but torch sees no CUDA device")
    dim = TorchDIM(torch, torch.device(device), config.estimator, config.image_size, config.embedding_dim,
                   config.gamma, config.prior_gradient_penalty, config.channels_last, config.y_dim)
    images = torch.rand(config.batch_size, 3, config.image_size, config.image_size, device=device)
    images = images.contiguous(memory_format=dim.memory_format)

    def step():
        # .item() waits for the step's kernels (CUDA is asynchronous) and is free on CPU.
        return float(dim.train_step(images).item())

    reset_peak = torch.cuda.reset_peak_memory_stats if device == "cuda" else None
    step_s, cpu_step_s = timing.time_steps(step, config.steps, config.warmup, after_warmup=reset_peak)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        device_name = "GPU:0 " + torch.cuda.get_device_name()
    else:
        peak_mb = timing.max_rss_mb()
        device_name = timing.cpu_description()
    flops = training_flops_per_image(config.image_size, config.embedding_dim, config.batch_size, config.gamma,
                                     config.y_dim)
    result = {"implementation": "torch_reference", **timing.step_stats(step_s, config.batch_size)}
    result.update(timing.flop_fields(flops, result["images_per_s"]))
    result.update(peak_memory_mb=peak_mb, device=device_name, threads=threads, torch_version=torch.__version__,
                  config=to_dict(config))
    if device == "cpu":
        result.update(timing.cpu_time_fields(cpu_step_s, config.batch_size, threads, flops))
    else:
        # torch's defaults, as the authors' code ran: TF32 for cuDNN convolutions (the 1x1 MI convolutions
        # included) but not for matmuls; JAX and TensorFlow allow TF32 for both, which a comparison must say.
        result["tf32_allowed"] = {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                  "cudnn": torch.backends.cudnn.allow_tf32}
    return result


def summary(result):
    """One line for the terminal."""
    c = result["config"]
    return (f"torch reference DIM(L) {c['estimator']} batch {c['batch_size']} on {result['device']}: "
            f"{result['images_per_s']:.1f} images/s, step {result['step_ms_median']:.1f} ms median "
            f"({result['step_ms_p90']:.1f} p90), peak {result['peak_memory_mb']:.0f} MB, "
            f"{result['achieved_gflop_per_s']:.1f} GFLOP/s")
