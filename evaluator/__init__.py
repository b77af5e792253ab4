"""Evaluation: evaluate.py's request checks (cli), the run of a threshold, sharing among processes,
results folders and reruns, records and summaries, scoring as the DAVIS toolkit does, overlays and
the sweep plot; demo/ segments one video of your own (demo.py); speed/ measures the tracker
(benchmark.py). Imports lib, models and dataset; never trainer."""
