"""The names users choose from on the command line (kept free of TensorFlow
imports so apps can reject a bad flag before TensorFlow starts)."""

DATASETS = ("digits", "cifar10", "cifar100", "stl10", "tiny_imagenet", "celeb_a", "folder")
ESTIMATORS = ("jsd", "dv", "infonce", "nwj")
CRITICS = ("dot", "concat", "bilinear", "separable")
PRIORS = ("uniform", "gaussian", "unit_ball", "unit_sphere")
ENCODERS = ("auto", "small", "dcgan", "alexnet")
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("off", "float16", "bfloat16")
