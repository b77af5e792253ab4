"""The network and the tracker: backbone halves, template matching, reuse gate, refinement network,
target model with its GN-CG solver, first-frame augmentation, checkpoints, hyperparameters
(config.py) and the tracker that segments a video. Imports only lib."""
