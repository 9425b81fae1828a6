"""The run layer: one function per thing a user runs, called by the apps.

- :func:`dim_keras.runs.train.train` (TrainConfig): data -> DeepInfoMax -> checkpoints -> export -> probe
- :func:`dim_keras.runs.generate.train_generator` (GenerateConfig): App. A.8 generator + quality monitor
- :func:`dim_keras.runs.evaluate.evaluate` (EvaluateConfig): the Sec. 4.1 measures of an encoder
- :func:`dim_keras.runs.estimate_mi.estimate_mi` (EstimateMIConfig): MINE's Gaussian check
- :func:`dim_keras.runs.ablation.search` (AblationConfig): the keras-tuner alpha/beta/gamma ablation
- :func:`dim_keras.runs.benchmark.benchmark` (BenchmarkConfig): throughput, FLOPs, memory
- :func:`dim_keras.runs.torch_reference.torch_reference` (TorchReferenceConfig): the authors' DIM(L) step in
  PyTorch, timed the same way (TF-free, like :mod:`dim_keras.runs.timing`, the harness both share)

Each takes a validated config of :mod:`dim_keras.config` and returns a dict;
user mistakes found late (corrupt data) raise :class:`dim_keras.errors.UsageError`.
Submodules are imported on use (they import TensorFlow).
"""
