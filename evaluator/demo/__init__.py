"""demo.py's logic: the user's video and start mask, the output folder and its run record, the run.

May import lib, models, dataset and the rest of evaluator; never trainer.
"""
