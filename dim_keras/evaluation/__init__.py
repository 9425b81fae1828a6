"""Evaluation of representations (DIM section 4.1, Tables 1, 2, 4; App. A.4-A.6).

Encode once into a `FeatureSet`, then run any measure on it::

    from dim_keras import evaluation
    features = evaluation.FeatureSet.from_encoder(encoder_fn, train_x, test_x, train_y, test_y)
    results = evaluation.evaluate_representation(features, metrics=["svm", "ndm"])
    print(evaluation.markdown_table(results))

Modules: `features` (encoding), `probes` (SVM, logistic, MLP, k-NN, attributes),
`semi_supervised` (fine-tuning, Table 2 SS), `ms_ssim` and `reconstruction`
(MS-SSIM of a decoder from Y), `mine` (I(X; Y)), `ndm` (neural dependency
measure), `neighbours` (App. A.4 figure), `suite` and `report`.
"""

from dim_keras.evaluation.features import PAPER_LAYERS, FeatureSet, encode, encode_stream, keras_encoder_fn
from dim_keras.evaluation.mine import gaussian_mutual_information, mine_estimate
from dim_keras.evaluation.ms_ssim import ms_ssim, ms_ssim_settings
from dim_keras.evaluation.ndm import gaussian_total_correlation, neural_dependency_measure
from dim_keras.evaluation.neighbours import nearest_neighbours, neighbour_figure
from dim_keras.evaluation.probes import (
    attribute_accuracies,
    knn_accuracy,
    linear_svm_accuracy,
    logistic_regression_accuracy,
    mlp_probe_accuracy,
)
from dim_keras.evaluation.reconstruction import build_dcgan_decoder, reconstruction_ms_ssim
from dim_keras.evaluation.report import comparison_table, markdown_table, read_json
from dim_keras.evaluation.semi_supervised import fine_tune_accuracy
from dim_keras.evaluation.suite import (
    METRICS,
    applicable_metrics,
    evaluate_encoder,
    evaluate_representation,
    parse_metrics,
    resolve_metrics,
)
