#!/usr/bin/env bash
# Regenerates the README's sample GIFs from the synthetic demo videos:
#   sample/gate_reuses.gif   the demo sequence on which the gate reuses most
#   sample/gate_computes.gif the demo sequence on which it computes most
# It needs the trained demo model weights/demo_synthetic_rn18.pth (an untrained gate never reuses).
# Usage: sample/make_samples.sh [RUN_FOLDER]   (default demo_samples_run; CPU takes a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-demo_samples_run}"
if [ ! -f weights/demo_synthetic_rn18.pth ]; then
    echo "error: weights/demo_synthetic_rn18.pth is missing; train it first (docs/demo_model.md)" >&2
    exit 2
fi
python evaluate.py --dset demo --TH 0.7 --save-overlays --output "$RUN" --overwrite
python - "$RUN/demo-demo_synthetic_rn18-TH0.7" <<'PY'
import json, shutil, sys
from pathlib import Path
from lib.atomic import atomic_write

results = Path(sys.argv[1])
rates = {name: s["reuse_rate"] for name, s in json.loads((results / "summary.json").read_text())["per_sequence"].items()}
most, least = max(rates, key=rates.get), min(rates, key=rates.get)
picks = {"gate_reuses.gif": most, "gate_computes.gif": least}
total = sum((results / "overlays" / f"{seq}.gif").stat().st_size for seq in picks.values())
if total > 2 * 1024 * 1024:
    sys.exit(f"error: the two GIFs take {total / 2**20:.1f} MB, over the 2 MB budget; lower gif_max_side or "
             "gif_colors in models/config.py (OverlayConfig)")
for target, seq in picks.items():
    src = results / "overlays" / f"{seq}.gif"
    atomic_write(Path("sample") / target, lambda tmp, src=src: shutil.copyfile(src, tmp))
    print(f"sample/{target}: {seq}, reuse rate {rates[seq]:.2f}, {src.stat().st_size // 1024} KiB")
PY
