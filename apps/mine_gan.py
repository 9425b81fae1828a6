"""GAN vs GAN+MINE against mode collapse on 25 Gaussians (MINE, Belghazi et al. 2018, Sec. 5.1, Fig. 4):

    python apps/mine_gan.py                    # 3 seeds x (GAN, GAN+MINE), CPU-sized networks, minutes
    python apps/mine_gan.py --seeds=5 --json   # JSON object with modes_gan, modes_gan_mine, ... on the last line
    python apps/mine_gan.py --learning_rate=1e-4 --generator_units=500,500 --discriminator_units=400,400,400 \\
        --statistics_units=400,400,400         # the paper's sizes and learning rate (slow on a CPU)

Each seed trains the plain GAN (beta = 0) and GAN+MINE (--beta, the generator also maximises
beta * I(G([eps, c]); c) estimated by MINE), counts the modes covered and the fraction of high-quality samples
(within 3 standard deviations of a mode) on --eval_samples samples, and writes KDE plots to
<output_dir>/mine_gan.png and the numbers to <output_dir>/mine_gan.json.  The flags are the fields of
dim_keras.config.MineGANConfig; the run is dim_keras.runs.mine_gan.mine_gan.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import MineGANConfig  # noqa: E402


def run(config):
    from dim_keras.runs.mine_gan import mine_gan
    result = mine_gan(config)
    print(f"| model | modes covered (of 25) | modes with >= {config.strict_min_count} samples | high quality |")
    print("|---|---|---|---|")
    for name, title in (("gan", "GAN"), ("gan_mine", f"GAN+MINE (beta={config.beta:g})")):
        print(f"| {title} | {result[f'modes_{name}']:.1f} ± {result[f'modes_{name}_std']:.1f} | "
              f"{result[f'modes_strict_{name}']:.1f} ± {result[f'modes_strict_{name}_std']:.1f} | "
              f"{100 * result[f'high_quality_{name}']:.1f} ± {100 * result[f'high_quality_{name}_std']:.1f} % |")
    print(f"(mean ± std over {len(result['seeds'])} seeds, {config.eval_samples} samples each)")
    if config.json:
        print(json.dumps(result))


if __name__ == "__main__":
    cli.run_app(MineGANConfig, run, "mine_gan.py")
