r"""Evaluate a trained DIM encoder with the measures of Hjelm et al., ICLR 2019, section 4.1 (Tables 1, 2, 4).

    python apps/evaluate.py --encoder=saved_models/<run>/encoder --dataset=digits \
        --output=saved_models/<run>/evaluation.json --neighbours_png=saved_models/<run>/neighbours.png

The train and test splits are encoded once (conv, fc and Y features); then every chosen measure runs on
the features:
  svm              linear SVM, hinge loss, --runs seeds, mean ± std (Table 4)          every layer
  logistic         logistic regression                                                  every layer
  mlp              one hidden layer of 200 units + dropout, test accuracy averaged     every layer
                   over the last epochs (Tables 1, 2)
  knn              k-nearest neighbours, L1                                             every layer
  attributes       CelebA: per-attribute linear accuracy, mean (min-max) (Fig. 11)      every layer
  semi_supervised  fine-tune encoder + 200-unit head (Table 2 "SS"; --encoder must be a .keras file)
  ms_ssim          MS-SSIM of a DCGAN decoder trained with L2 to reconstruct x from Y (Table 4)
  mine             MINE estimate of I(X; Y), DV bound on the test split (Table 4)
  ndm              neural dependency measure of Y (Table 4, App. A.6)
  neighbours       App. A.4 figure: one training query per class and its 4 nearest test images (L1 on Y)

--encoder is a SavedModel directory from dim_keras.export.export_encoder (serving_default: uint8 images
"images" -> dict of conv/fc/y/local), or a .keras file of the encoder (float images in [0, 1] -> dict) or
of a whole DeepInfoMax model (train.py's model.keras), which also allows semi_supervised.  Images larger
than the encoder's input are center-cropped to it (STL-10: 96x96 -> 64x64, as in
dim_keras.data.dataset_defaults); the images of --dataset=folder are resized to it (as train.py
--image_size did).

Prints a Markdown table (rows: measures, columns: conv, fc, Y) and writes the results as JSON to --output.
Bad input prints one line on stderr and exits with code 2.  The flags are the fields of
dim_keras.config.EvaluateConfig; the run is dim_keras.runs.evaluate.evaluate.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dim_keras import cli  # noqa: E402
from dim_keras.config import EvaluateConfig  # noqa: E402


def run(config):
    from dim_keras.runs.evaluate import evaluate
    evaluate(config)  # prints the table


if __name__ == "__main__":
    cli.run_app(EvaluateConfig, run, "evaluate.py")
