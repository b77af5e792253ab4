"""Training (train.py): options, the training step and its losses, the target-model cache,
checkpoints, logging, DistributedDataParallel, interrupts. Imports lib, models and dataset; never
evaluator."""
