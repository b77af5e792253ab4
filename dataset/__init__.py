"""The data: readers of the evaluation sets (DAVIS, YouTube-VOS, ...) as VideoSequence objects, the
training sampler, and the synthetic video generator. Imports lib and models (for the training
hyperparameters)."""
