"""What the learned lesion filter adds to lung-ct's time, per real chest CT.

    python bench/lesion_filter.py [--case A0001 ...] [--repeat 2] [--json-out F]

For each case: the lesion stage alone, timed both ways on the same lungs: the classical
rules (``find_lesions``) and the filter path (sensitive candidates, patches, network,
merge), split into its parts. The difference is what the filter adds to a ``lung-ct`` run
(the lungs, measurements and result writing are the same either way). Uses the installed
filter bundle (``models/lung_lesion_filter`` or the user's model folder); on CUDA where
present (with AMP), else on the CPU threads torch is given (``--threads``, default 2).

Each part is timed twice: wall time (``time.perf_counter``, the fastest of the runs) and
the process's CPU time (``time.process_time``, keys ``cpu_*``, also the least of the
runs). On a machine shared with other work, wall time grows with their load while CPU
time does not (the generator is single-threaded numpy/scipy, so its CPU time is what its
wall time would be on an idle core; the network's CPU time sums its threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _timed(t: dict[str, float], name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)``; its wall and CPU seconds into ``t[name]``, ``t["cpu_" + name]``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    t[name] = time.perf_counter() - wall
    t["cpu_" + name] = time.process_time() - cpu
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", default=None)
    ap.add_argument("--repeat", type=int, default=2, help="take the fastest of N runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from medvision.pipelines.lung_ct import LungParams
    from medvision.pipelines.lung_ct._candidates import find_candidates
    from medvision.pipelines.lung_ct._filter import LesionFilter, find_filter
    from medvision.pipelines.lung_ct._lesions import find_lesions
    from medvision.pipelines.lung_ct._lungs import segment_lungs
    from medvision.pipelines.lung_ct._patches import candidate_patches
    from medvision.training._lesion_cases import CASES, get_case, load_volume

    torch.set_num_threads(args.threads)
    root = find_filter()
    if root is None:
        print("no lung_lesion_filter bundle installed", file=sys.stderr)
        return 2
    lesion_filter = LesionFilter.load(root)
    p = LungParams()
    rows = []
    for case in [get_case(c) for c in args.case] if args.case else CASES:
        volume = load_volume(case)
        lungs = segment_lungs(volume, p)
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            t: dict[str, float] = {}
            timed = partial(_timed, t)
            timed("rules", find_lesions, volume, lungs, p)
            crops = timed("generate", find_candidates, volume, lungs, p)
            patches = timed("patches", candidate_patches, volume, crops)
            timed("network", lesion_filter.logits, patches)
            # patches + network + merge
            timed("select_total", lesion_filter.select, volume, crops)
            for pre in ("", "cpu_"):
                t[pre + "filter_path"] = t[pre + "generate"] + t[pre + "select_total"]
            best = {k: min(v, best.get(k, v)) for k, v in t.items()}
        # Fastest filter path minus fastest rules (each the least disturbed by other load).
        best["added"] = best["filter_path"] - best["rules"]
        best["cpu_added"] = best["cpu_filter_path"] - best["cpu_rules"]
        row = {
            "case": case.name,
            "slices": volume.shape[0],
            "candidates": len(crops),
            "device": str(lesion_filter.device),
        } | {k: round(v, 2) for k, v in best.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
