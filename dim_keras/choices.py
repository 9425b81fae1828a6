"""The names users choose from (no TensorFlow import, so a bad name is
rejected before TensorFlow starts).  The library modules that implement them
check their own tables against these (tests/test_config.py)."""

# mnist: official idx files or tfds (the dataset of Tschannen et al., apps/mi_lab.py; 28x28, 10 classes).
# tfrecord: the sharded TFRecords apps/prepare_data.py writes from any of the others (dim_keras.data.tfrecord).
DATASETS = ("digits", "cifar10", "cifar100", "stl10", "tiny_imagenet", "celeb_a", "folder", "mnist", "tfrecord")
# --streaming (dim_keras.data.streaming): auto streams splits larger than STREAMING_AUTO_BYTES decoded.
STREAMING_MODES = ("auto", "on", "off")
# --streaming=auto holds a split in memory up to this decoded size (uint8 N x H x W x 3) and streams larger ones.
# In memory a split is decoded once, before training, and every epoch gathers batches from the array: the
# fastest input (docs/BENCHMARKS.md: several times the streaming pipeline's images/s), and the pipeline the
# paper's runs used.  Its cost is the decoded size in RAM for the whole run (plus a copy for arrays up to
# 256 MB, which tf.data keeps in its graph).  At 2 GiB the paper's datasets stay in memory as before (CIFAR
# 150 MB, Tiny ImageNet 1.2 GB, CelebA at 64x64 2.0 GB; STL-10's 2.7 GB pretraining split is memory-mapped
# from stl10_binary/, and streams only from tfds), and so does anything a workstation holds without
# noticing, while a folder of a million photos or an ImageNet-sized tfds split streams.  Here, not in
# dim_keras.data.streaming, so that the TF-free dim_keras.config can quote it in its help.
STREAMING_AUTO_BYTES = 2 * 2**30
# mine_f is MINE's f-divergence bound E_J[T] - E_M[e^{T-1}]: the same function as
# nwj, kept under MINE's name.  MINE's bias-corrected DV gradient needs state (a
# moving average across steps), so it is not an estimator name but the
# simulation's --ema_decay option (on dv), and "dv_ema" in its sweeps.
ESTIMATORS = ("jsd", "dv", "infonce", "nwj", "mine_f")
SIMULATION_ESTIMATORS = ESTIMATORS + ("dv_ema",)
INVARIANCE_FUNCTIONS = ("identity", "cube", "sin")
MI_EXPERIMENTS = ("single", "sweep", "invariance")
# apps/mi_lab.py: one sub-command per experiment of Tschannen et al. (ICLR 2020), on two views (top and bottom
# half) of handwritten digits (dim_keras.multiview).
MI_LAB_EXPERIMENTS = ("invertible", "adversarial", "conditioning", "critics", "target_mi", "encoders", "negatives")
VIEW_DATASETS = ("digits", "mnist")
# residual_mlp: Tschannen et al. Sec. 3.1 "bias towards hard-to-invert encoders" (identity at zero weights).
VIEW_ENCODERS = ("mlp", "conv", "realnvp", "residual_mlp")
# apps/mi_lab.py critics (Tschannen et al. Sec. 3.2): the bilinear, separable and MLP (concatenation) critics.
MI_LAB_CRITICS = ("bilinear", "separable", "mlp")
# apps/mine_bottleneck.py (dim_keras.bottleneck, MINE Sec. 5.3): the stochastic encoders of MINE's Table 3
# (none = the deterministic baseline) and the digit datasets it runs on.
BOTTLENECK_NOISES = ("gaussian", "additive", "propagated", "none")
BOTTLENECK_DATASETS = ("digits", "mnist")
CRITICS = ("dot", "concat", "bilinear", "separable")
PRIORS = ("uniform", "gaussian", "unit_ball", "unit_sphere")
# folded: the strided-crop encoder of DIM Sec. 4.2 / Table 3; resnet18/50: CIFAR-stem ResNets (Table 3's
# CIFAR-10 runs used a ResNet-50).  CROP_ENCODERS: the folded encoder's crop networks (dim_keras.encoders).
ENCODERS = ("auto", "small", "dcgan", "alexnet", "folded", "resnet18", "resnet50")
CROP_ENCODERS = ("conv", "resnet18", "resnet50")
STRATEGIES = ("default", "mirrored", "multi_worker")
# apps/train.py --method: dim (dim_keras.models.DeepInfoMax) or cpc (dim_keras.cpc, DIM Sec. 4.2 / Table 3's
# CPC baseline); the comparison models of the baselines issue join this list.
# --method: DIM, the Sec. 4.2 CPC baseline, and the comparison models of issue 15 (dim_keras.baselines).
METHODS = ("dim", "cpc", "mim", "vae", "beta_vae", "ae", "aae", "bigan", "nat")
# The methods of dim_keras.baselines (everything but DIM's objective and CPC).
BASELINE_METHODS = ("mim", "vae", "beta_vae", "ae", "aae", "bigan", "nat")
# The methods whose Y is the mean of a Gaussian posterior q(z|x) pulled towards a standard-normal(-scaled) prior:
# only there does Burda et al.'s active-unit threshold (posterior-mean variance > 0.01) mean something; the
# others' Y has an arbitrary scale (dim_keras.evaluation.latents).
GAUSSIAN_POSTERIOR_METHODS = ("vae", "beta_vae", "mim")
# Coordinate-prediction tasks of DIM Sec. 4.3 / App. A.7 (both: Table 5's "coord" runs use both).
COORDINATE_TASKS = ("none", "absolute", "relative", "both")
PRECISIONS = ("off", "float16", "bfloat16")
RECIPES = ("paper", "improved")
AUGMENTATIONS = ("none", "pad_crop_flip", "pad_crop_flip_colour")
LR_SCHEDULES = ("constant", "cosine")
LAYER_DEFAULTS = ("keras", "torch")
ENCODER_OUTPUTS = ("local", "conv", "fc", "y")

# Evaluation measures (dim_keras.evaluation.suite).
LAYER_METRICS = ("svm", "logistic", "mlp", "knn", "attributes")
REPRESENTATION_METRICS = ("ms_ssim", "mine", "ndm", "neighbours")
METRICS = LAYER_METRICS + ("semi_supervised",) + REPRESENTATION_METRICS

# Generation (dim_keras.generation, App. A.8 and the Table 11 baselines).
GENERATIVE_MODELS = ("implicit", "nsgan_cp", "wgan_gp")
GENERATOR_ARCHITECTURES = ("dcgan", "resnet")

# Ablation search (tuning/ablation.py): objective name -> keras-tuner direction.
ABLATION_OBJECTIVES = {"probe_accuracy": "max", "ms_ssim": "max", "mine": "max", "ndm": "min"}
ABLATION_MODES = ("grid", "bayesian")

# Benchmark modes (apps/benchmark.py).
BENCHMARK_MODES = ("training", "sweep", "data_pipeline", "matmul_peak")
