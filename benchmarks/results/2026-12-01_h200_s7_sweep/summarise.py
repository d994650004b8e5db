"""Group the sweep's real-speech JSONs by recipe: per-run real SI-SNRi, the group mean, and the
paired difference to the committed recipe (per-mixture means of each group, ± 95 % CI over the
80 mixtures; this CI omits run-to-run spread, which the per-run column shows).
usage: python summarise.py   (from the repository root)
"""
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
GROUPS = {
    "committed (rumble 0.5)": ["b0", "b1", "b2"],
    "rumble 0.8": ["rb0", "rb1", "rb2"],
    "rumble 1.0": ["r10a", "r10b"],
    "self_pair 0.3": ["sp0", "sp1"],
    "rumble 0.8 + self_pair 0.3": ["rbs0", "rbs1"],
    "rumble 0.8 + eq_highpass 0.2": ["rbe0", "rbe1"],
}
sweep = {**json.load(open(HERE / "sweep.json")), **json.load(open(HERE / "sweep2.json"))}


def per_mixture(name: str) -> dict[str, float]:
    return json.load(open(HERE / f"real_{name}.json"))["real"]["2spk"]["per_mixture"]


def group_mean(names: list[str]) -> np.ndarray:
    runs = [per_mixture(n) for n in names]
    ids = sorted(runs[0])
    return np.array([[r[i] for i in ids] for r in runs]).mean(0)


base = group_mean(GROUPS["committed (rumble 0.5)"])
print("| recipe | runs: real dev | mean | paired vs committed | runs: default test |")
print("|---|---|---|---|---|")
for g, names in GROUPS.items():
    reals = [np.mean(list(per_mixture(n).values())) for n in names]
    tests = [sweep[n]["metrics"]["test/si_snri"] for n in names]
    d = group_mean(names) - base
    ci = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    paired = "" if names == GROUPS["committed (rumble 0.5)"] else f"{d.mean():+.2f} ± {ci:.2f}"
    print(f"| {g} | {', '.join(f'{r:+.2f}' for r in reals)} | {np.mean(reals):+.2f} | {paired} | "
          f"{', '.join(f'{t:+.2f}' for t in tests)} |")
