"""benchmark.py's measurements of the tracker's speed (stages, reuse rates, objects, the published
schedule, bfloat16 on the CPU). Imports lib and models."""
