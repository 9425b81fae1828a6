r"""Train an image generator by implicit prior matching to two Gaussians (Hjelm et al., ICLR 2019, App. A.8-A.9),
or one of the Table 11 baselines (NS-GAN-CP, WGAN-GP), and track its quality offline.

    python apps/generate.py --dataset=digits --model=implicit --architecture=dcgan --epochs=10 \
        --output_dir=saved_models/generate_digits

Writes to --output_dir (default saved_models/generate-<model>-<timestamp>):
  samples/epoch_NNN.png     an 8x8 grid of samples from a fixed z after every epoch (epoch_000: untrained G)
  histograms/epoch_NNN.png  histograms of the encoder's 1-D output on real vs generated images (as Fig. 15),
                            with the targets N(mu_P, 1) and N(mu_Q, 1) of the implicit generator drawn in
  metrics.json              per epoch: the training metrics, the Frechet and kernel (KID) distances between
                            features of real and generated images, and the overlap of E's two modes
  tensorboard/              the same numbers for TensorBoard (train/ and quality/)
  generator/                SavedModel: serving_default takes z float32 [N, z_dim], returns {"images": uint8}

The distances use the features of --feature_encoder (a DIM encoder SavedModel from dim_keras.export) when
given; otherwise a fixed random-init conv net (dim_keras.generation.quality.build_random_feature_extractor, seed
0 in every run so that runs stay comparable). Neither is Inception: the numbers are not comparable to published
FID/KID values, only to each other within one feature space.

The flags are the fields of dim_keras.config.GenerateConfig; the run is
dim_keras.runs.generate.train_generator.  Bad input prints one line on stderr and exits with code 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import GenerateConfig  # noqa: E402


def run(config):
    from dim_keras.runs.generate import summary_line, train_generator
    history = train_generator(config)
    print(summary_line(history, config), flush=True)


if __name__ == "__main__":
    cli.run_app(GenerateConfig, run, "generate.py")
