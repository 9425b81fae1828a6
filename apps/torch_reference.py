"""PyTorch re-implementation of the authors' DIM(L) training step, for timing only.

The authors' code (rdevon/DIM, PyTorch on their ``cortex`` framework) is not
vendored in this repository.  This file re-implements the pieces of it that a
local-DIM training step on CIFAR-10 executes, so that ``apps/benchmark.py
--compare_torch`` can time it side by side with :class:`dim_keras.DeepInfoMax`
on the same machine, batch size and thread count:

- the CIFAR encoder of Table 1: conv 64, 128, 256 (4x4, stride 2, padding 1),
  each BN + ReLU; flatten; fc 1024 BN + ReLU; linear Y of 64.  The local map is
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
  once scores reach the hundreds; /work/shared/REFERENCE-NOTES.md) - the same
  amount of work;
- prior matching (eq. 7, Table 10): ``sigmoid(Y)`` against a uniform prior on
  [0, 1]^64, discriminator 1000-200-1, non-saturating encoder loss, the
  discriminator trained on ``Y.detach()`` (optionally with the authors'
  gradient penalty on real and fake inputs);
- Adam, lr 1e-4, betas (0.5, 0.999) for the encoder + MI networks and for the
  discriminator.

Only what a training step does is reproduced (no data loading, no
evaluation).  The module needs torch and absl only, not TensorFlow, so it also
runs on a machine that has PyTorch but no TF.

    python apps/torch_reference.py --batch_size=64 --steps=20 --json
"""

import json
import math
import os
import resource
import statistics
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("estimator", "jsd", ["jsd", "infonce"],
                  "Local MI estimator: the authors' fenchel_dual_loss with the JSD measure, or infonce_loss.")
flags.DEFINE_integer("batch_size", 64, "Images per training step (the authors use 64).", lower_bound=2)
flags.DEFINE_integer("image_size", 32, "Side of the square random images (multiple of 8, >= 16).", lower_bound=16)
flags.DEFINE_integer("steps", 20, "Timed training steps.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed steps first (allocator and kernel-selection warm-up).", lower_bound=0)
flags.DEFINE_integer("embedding_dim", 2048, "Units of MI1x1ConvNet / MIFCNet (2048 in the paper).", lower_bound=1)
flags.DEFINE_float("gamma", 0.1, "Weight of the prior-matching term (0 switches the discriminator off).",
                   lower_bound=0.0)
flags.DEFINE_float("prior_gradient_penalty", 0.0,
                   "Weight of the authors' gradient penalty on the discriminator's real and fake inputs.",
                   lower_bound=0.0)
flags.DEFINE_integer("threads", 0, "torch intra-op threads; 0 = all cores (os.cpu_count()).", lower_bound=0)
flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "Where to run: auto = cuda if available, else cpu.")
flags.DEFINE_boolean("channels_last", False,
                     "Use the channels-last memory format (not the authors' default; can be faster on GPU/CPU).")
flags.DEFINE_integer("seed", 0, "Seed for weights and the random batch.")
flags.DEFINE_boolean("json", False, "Print a JSON object with the results as the last line.")


def _import_torch():
    import torch  # noqa: F401  (imported lazily so --help works without torch)
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
                 prior_gradient_penalty=0.0, channels_last=False):
        self.torch = torch
        self.device = device
        self.estimator = estimator
        self.gamma = gamma
        self.prior_gradient_penalty = prior_gradient_penalty
        nets = build_networks(torch, image_size, embedding_dim)
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


def forward_gflop_per_image(image_size=32, embedding_dim=2048, batch_size=64, gamma=0.1):
    """Analytic forward GFLOP per image of the step above (multiply-add = 2 FLOPs)."""
    s = image_size
    conv = (2 * (s // 2) ** 2 * 16 * 3 * 64 + 2 * (s // 4) ** 2 * 16 * 64 * 128
            + 2 * (s // 8) ** 2 * 16 * 128 * 256)
    fc = 2 * 256 * (s // 8) ** 2 * 1024 + 2 * 1024 * 64
    locations = (s // 4) ** 2
    d = embedding_dim
    local_net = locations * 2 * (128 * d + d * d + 128 * d)
    global_net = 2 * (64 * d + d * d + 64 * d)
    scores = 2 * batch_size * locations * d
    prior = 2 * (64 * 1000 + 1000 * 200 + 200) * (3 if gamma > 0 else 0)
    return (conv + fc + local_net + global_net + scores + prior) / 1e9


def run_benchmark(estimator="jsd", batch_size=64, image_size=32, steps=20, warmup=3, embedding_dim=2048,
                  gamma=0.1, prior_gradient_penalty=0.0, threads=0, device="auto", channels_last=False,
                  seed=0):
    """Times ``steps`` training steps after ``warmup``; returns a dict of results."""
    torch = _import_torch()
    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device=cuda but torch sees no CUDA device")
    dim = TorchDIM(torch, torch.device(device), estimator, image_size, embedding_dim, gamma,
                   prior_gradient_penalty, channels_last)
    images = torch.rand(batch_size, 3, image_size, image_size, device=device)
    images = images.contiguous(memory_format=dim.memory_format)

    def sync(loss):
        # .item() waits for the step's kernels (CUDA is asynchronous) and is free on CPU.
        return float(loss.item())

    for _ in range(warmup):
        sync(dim.train_step(images))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_s, cpu_step_s = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        sync(dim.train_step(images))
        step_s.append(time.perf_counter() - start)
        cpu_step_s.append(time.process_time() - cpu_start)
    median = statistics.median(step_s)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        device_name = torch.cuda.get_device_name()
    else:
        peak_mb = _max_rss_mb()
        device_name = f"CPU ({os.cpu_count()} cores)"
    gflop = 3 * forward_gflop_per_image(image_size, embedding_dim, batch_size, gamma)
    images_per_s = batch_size / median
    result = {
        "implementation": "torch_reference",
        "images_per_s": images_per_s,
        "images_per_s_mean": batch_size * len(step_s) / sum(step_s),
        "step_ms_median": 1e3 * median,
        "step_ms_p90": 1e3 * _percentile(step_s, 90),
        "step_ms_min": 1e3 * min(step_s),
        "peak_memory_mb": peak_mb,
        "gflop_per_image": gflop,
        "achieved_gflop_per_s": gflop * images_per_s,
        "cifar10_epoch_s": 50000.0 / images_per_s,
        "device": device_name,
        "threads": threads,
        "torch_version": torch.__version__,
        "config": {"estimator": estimator, "batch_size": batch_size, "image_size": image_size, "steps": steps,
                   "warmup": warmup, "embedding_dim": embedding_dim, "gamma": gamma,
                   "prior_gradient_penalty": prior_gradient_penalty, "channels_last": channels_last},
    }
    if device == "cpu":
        # CPU-seconds per step barely depend on other processes sharing the cores (see benchmark.py).
        cpu_median = statistics.median(cpu_step_s)
        result.update(cpu_ms_per_step_median=1e3 * cpu_median, gflop_per_cpu_s=gflop * batch_size / cpu_median,
                      images_per_s_idle_estimate=batch_size * threads / cpu_median)
    return result


def _max_rss_mb():
    """This process image's peak RSS in MiB: /proc/self/status VmHWM on Linux (ru_maxrss survives exec and
    would report a bigger parent's peak), else ru_maxrss."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _percentile(values, q):
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _fail(message):
    print(f"torch_reference: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    try:
        remaining = FLAGS(argv)
    except flags.Error as error:
        _fail(str(error).splitlines()[0])
    if len(remaining) > 1:
        _fail(f"unexpected arguments: {' '.join(remaining[1:])}")
    return remaining


def main(argv):
    del argv
    if FLAGS.image_size % 8:
        _fail(f"--image_size must be a multiple of 8 (three stride-2 convs), got {FLAGS.image_size}")
    try:
        _import_torch()
    except ImportError:
        _fail("PyTorch is not installed (pip install torch)")
    try:
        result = run_benchmark(FLAGS.estimator, FLAGS.batch_size, FLAGS.image_size, FLAGS.steps, FLAGS.warmup,
                               FLAGS.embedding_dim, FLAGS.gamma, FLAGS.prior_gradient_penalty, FLAGS.threads,
                               FLAGS.device, FLAGS.channels_last, FLAGS.seed)
    except ValueError as error:
        _fail(str(error))
    print(f"torch reference DIM(L) {FLAGS.estimator} batch {FLAGS.batch_size} on {result['device']}: "
          f"{result['images_per_s']:.1f} images/s, step {result['step_ms_median']:.1f} ms median "
          f"({result['step_ms_p90']:.1f} p90), peak {result['peak_memory_mb']:.0f} MB, "
          f"{result['achieved_gflop_per_s']:.1f} GFLOP/s")
    if FLAGS.json:
        print(json.dumps(result))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
