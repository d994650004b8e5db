import sys, importlib.util, numpy as np, collections
from pathlib import Path
spec = importlib.util.spec_from_file_location("rst", "benchmarks/real_speech_transfer.py")
rst = importlib.util.module_from_spec(spec); sys.modules["rst"] = rst; spec.loader.exec_module(rst)
items = rst.load_set(Path("data/real_speech/mix/real2mix_dev"))
by = collections.defaultdict(list)
edges = [0, 5, 20, 40, 60, 100, 150]
for it, (_, mix, srcs) in zip(items, rst.mixtures_from_set(items)):
    for spk, s in zip(it["speakers"], srcs):
        s = s - s.mean(); S = np.abs(np.fft.rfft(s))**2; f = np.fft.rfftfreq(len(s), 1/8000)
        by[spk].append([S[(f >= a) & (f < b)].sum() / S.sum() * 100 for a, b in zip(edges[:-1], edges[1:])])
print("bands", edges)
for k, v in sorted(by.items()): print(f"{k:8s}", np.round(np.mean(v, 0), 2))
