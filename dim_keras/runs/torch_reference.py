"""PyTorch re-implementation of the authors' DIM(L) training step, for timing only (no TensorFlow import).

The authors' code (rdevon/DIM, PyTorch on their ``cortex`` framework) is not
vendored in this repository.  This module re-implements the pieces of it that a
local-DIM training step on CIFAR-10 executes, so that ``apps/benchmark.py
--compare_torch`` can time it side by side with :class:`dim_keras.DeepInfoMax`
on the same machine, batch size and thread count:

- the CIFAR encoder of Table 1: conv 64, 128, 256 (4x4, stride 2, padding 1),
  each BN + ReLU; flatten; fc 1024 BN + ReLU; linear Y of 64 (``y_dim``).  The local map is
  the 2nd conv's output after ReLU, 128 x 8 x 8;
- ``MI1x1ConvNet`` (local embedding, Table 9): 1x1 conv -> BN -> ReLU -> 1x1
  conv, plus a linear 1x1 shortcut initialised to a noisy identity, then
  LayerNorm over channels; 2048 units;
- ``MIFCNet`` (global embedding, Table 8): Linear -> BN -> ReLU -> Linear plus
  the noisy-identity linear shortcut; 2048 units;
- ``fenchel_dual_loss`` (JSD, eq. 4 as the authors compute it): one
  ``mm(l, m^T)`` over (N * locals) x (N * globals), the positive term
  ``log 2 - softplus(-T)`` and negative term ``softplus(-T) + T - log 2``
  averaged over locations, then over the N positives and the N(N-1) negatives
  with exact 0/1 masks; loss = E_neg - E_pos;
- ``infonce_loss`` (eq. 5) with the authors' tensor layout (the positive column
  concatenated to an expanded [N, locals, N * locals] block of negatives), but
  with an exact ``-inf`` mask instead of their ``-10`` shift (which is no mask
  once scores reach the hundreds; see the project's reference notes) - the
  same amount of work;
- prior matching (eq. 7, Table 10): ``sigmoid(Y)`` against a uniform prior on
  [0, 1]^y_dim, discriminator 1000-200-1, non-saturating encoder loss, the
  discriminator trained on ``Y.detach()`` (optionally with the authors'
  gradient penalty on real and fake inputs);
- Adam, lr 1e-4, betas (0.5, 0.999) for the encoder + MI networks and for the
  discriminator.

Only what a training step does is reproduced (no data loading, no
evaluation).  The module imports torch on use and, of dim_keras, only the
TF-free modules, so it also runs on a machine that has PyTorch but no TF.
The entry point is :func:`torch_reference` (a :class:`TorchReferenceConfig`
in, a dict of results out); ``apps/torch_reference.py`` is its command line.
"""

import math
import os

from dim_keras.config import to_dict
from dim_keras.errors import UsageError
from dim_keras.runs import timing


def import_torch():
    """The torch module; UsageError (one line) when it is not installed."""
    try:
        import torch
    except ImportError:
        raise UsageError("PyTorch is not installed (pip install torch)") from None
    return torch


def build_networks(torch, image_size=32, embedding_dim=2048, y_dim=64):
    """The authors' CIFAR encoder, MI1x1ConvNet, MIFCNet and prior discriminator."""
    nn = torch.nn

    class Encoder(nn.Module):
        """Table 1: conv 64-128-256 (4x4 s2 p1, BN, ReLU), fc 1024 (BN, ReLU), linear Y 64."""

        def __init__(self):
            super().__init__()
            # Conv biases are redundant before BN; leaving them out changes no timing that matters.
            self.conv1 = nn.Sequential(nn.Conv2d(3, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
            self.conv2 = nn.Sequential(nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU())
            self.conv3 = nn.Sequential(nn.Conv2d(128, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU())
            flat = 256 * (image_size // 8) ** 2
            self.fc = nn.Sequential(nn.Linear(flat, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU())
            self.y = nn.Linear(1024, y_dim)

        def forward(self, x):
            local = self.conv2(self.conv1(x))
            h = self.conv3(local)
            h = self.fc(torch.flatten(h, 1))
            return local, self.y(h)

    class Permute(nn.Module):
        def __init__(self, *perm):
            super().__init__()
            self.perm = perm

        def forward(self, x):
            return x.permute(*self.perm)

    class MI1x1ConvNet(nn.Module):
        """Local embedding (authors' MI1x1ConvNet, Table 9)."""

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

    class MIFCNet(nn.Module):
        """Global embedding (authors' MIFCNet, Table 8)."""

        def __init__(self, n_input, n_units):
            super().__init__()
            self.linear_shortcut = nn.Linear(n_input, n_units)
            self.block_nonlinear = nn.Sequential(
                nn.Linear(n_input, n_units), nn.BatchNorm1d(n_units), nn.ReLU(), nn.Linear(n_units, n_units))
            if n_units >= n_input:
                eye = torch.zeros(n_units, n_input, dtype=torch.bool)
                eye[torch.arange(n_input), torch.arange(n_input)] = True
                with torch.no_grad():
                    self.linear_shortcut.weight.uniform_(-0.01, 0.01).masked_fill_(eye, 1.0)

        def forward(self, x):
            return self.block_nonlinear(x) + self.linear_shortcut(x)

    encoder = Encoder()
    local_net = MI1x1ConvNet(128, embedding_dim)
    global_net = MIFCNet(y_dim, embedding_dim)
    discriminator = nn.Sequential(nn.Linear(y_dim, 1000), nn.ReLU(), nn.Linear(1000, 200), nn.ReLU(),
                                  nn.Linear(200, 1))
    return encoder, local_net, global_net, discriminator


def fenchel_dual_loss(torch, l, m):
    """The authors' JSD loss: l [N, units, locals], m [N, units, globals] -> E_neg - E_pos."""
    F = torch.nn.functional
    n, units, n_locals = l.shape
    n_multis = m.shape[2]
    l = l.permute(0, 2, 1).reshape(-1, units)
    m = m.permute(0, 2, 1).reshape(-1, units)
    u = torch.mm(m, l.t()).reshape(n, n_multis, n, n_locals).permute(0, 2, 3, 1)
    mask = torch.eye(n, device=u.device)
    n_mask = 1 - mask
    log_2 = math.log(2.0)
    e_pos = (log_2 - F.softplus(-u)).mean(2).mean(2)
    e_neg = (F.softplus(-u) + u - log_2).mean(2).mean(2)
    e_pos = (e_pos * mask).sum() / mask.sum()
    e_neg = (e_neg * n_mask).sum() / n_mask.sum()
    return e_neg - e_pos


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
    """One DIM(L) training step as the authors run it: encoder + MI nets, then the discriminator."""

    def __init__(self, torch, device, estimator="jsd", image_size=32, embedding_dim=2048, gamma=0.1,
                 prior_gradient_penalty=0.0, channels_last=False, y_dim=64):
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
        betas = (0.5, 0.999)
        self.optimizer = torch.optim.Adam(
            [*self.encoder.parameters(), *self.local_net.parameters(), *self.global_net.parameters()],
            lr=1e-4, betas=betas)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=1e-4, betas=betas)
        for net in (self.encoder, self.local_net, self.global_net, self.discriminator):
            net.train()

    def train_step(self, images):
        torch = self.torch
        F = torch.nn.functional
        self.optimizer.zero_grad(set_to_none=True)
        local, y = self.encoder(images)
        l = self.local_net(local)
        m = self.global_net(y)
        n, units = l.shape[:2]
        l = l.reshape(n, units, -1)
        m = m.unsqueeze(2)
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


def training_flops_per_image(image_size=32, embedding_dim=2048, batch_size=64, gamma=0.1, y_dim=64):
    """Analytic FLOPs per training image of the step above: 3 x forward (multiply-add = 2 FLOPs).

    Counted like :func:`dim_keras.runs.benchmark.training_flops_per_image` counts the Keras model,
    so the two agree for the paper's configuration.
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
    return result


def summary(result):
    """One line for the terminal."""
    c = result["config"]
    return (f"torch reference DIM(L) {c['estimator']} batch {c['batch_size']} on {result['device']}: "
            f"{result['images_per_s']:.1f} images/s, step {result['step_ms_median']:.1f} ms median "
            f"({result['step_ms_p90']:.1f} p90), peak {result['peak_memory_mb']:.0f} MB, "
            f"{result['achieved_gflop_per_s']:.1f} GFLOP/s")
