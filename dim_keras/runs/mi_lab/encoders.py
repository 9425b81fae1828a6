"""Tschannen et al. (ICLR 2020), Sec. 3.3 and Fig. 4a-b: the encoder matters more than the estimator.

MLP encoders (300-300-100, 238k parameters on MNIST) and ConvNet encoders (two 5x5 stride-2 ReLU
convolutions of 64 and 128 channels, layer normalisation, spatial average pooling, a dense layer to 100;
220k parameters) are trained with a bilinear critic to ``min |I_EST - t|`` for each target ``t`` of
``--targets`` (the paper's 2 and 4) and each estimator, so that both reach the same value of the bound; the
paper finds the ConvNet's linear probe clearly better at equal I_EST (MNIST: both ~94 % when trained
supervised).  The runs and figure are :func:`dim_keras.runs.mi_lab.critics.run_targets`'s.

On digits the views are scikit-learn's native 8x8 images cut into 4x8 halves (the paper: MNIST's 14x28): the
two stride-2 convolutions leave a 1x2 map, so the ConvNet sees little spatial structure to exploit; with
``--dataset=mnist`` it runs on the paper's 14x28 halves.
"""

from dim_keras.runs.mi_lab import critics

# Steps per run, sized for ~4 minutes on a shared CPU (24 runs; the paper: 21k steps, its loss curves reach
# the target after ~7k).  On digits t = 2 is reached within ~400 steps; longer runs with --steps.
DEFAULT_STEPS = 600


def run(config, log=print):
    """The ``encoders`` experiment; returns the results written to ``<output_dir>/encoders.json``."""
    result = critics.run_targets(config, config.encoders, DEFAULT_STEPS, log=log)
    return critics.finish_targets(config, result, critics.reach_lines(result) + encoder_lines(result))


def encoder_lines(result):
    """Per estimator and target: the encoders ranked by final probe accuracy (the claim: conv above mlp)."""
    lines = []
    for estimator, by_target in result["final"].items():
        for target, by_encoder in by_target.items():
            accuracy = {encoder: f["accuracy"]["mean"] for encoder, f in by_encoder.items()}
            ranked = ", ".join(f"{e} {a:.3f}" for e, a in sorted(accuracy.items(), key=lambda kv: -kv[1]))
            line = f"  probe at {critics.estimator_name(estimator)} {target}: {ranked}"
            if {"conv", "mlp"} <= set(accuracy):
                spread = max(by_encoder[e]["accuracy"]["std"] for e in ("conv", "mlp"))
                line += ": claim (conv > mlp) " + critics.verdict(accuracy["conv"] - accuracy["mlp"], spread)
            lines.append(line)
    return lines
