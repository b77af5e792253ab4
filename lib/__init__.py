"""The ground floor: small helpers every other part may use (image I/O, atomic writes, frame
prefetching, interrupts, the launcher's command line, devices, argument types, printable text, safe
unpickling, the torchrun process group). It imports nothing from models, dataset, trainer or
evaluator (checked by the import contract in pyproject.toml)."""
