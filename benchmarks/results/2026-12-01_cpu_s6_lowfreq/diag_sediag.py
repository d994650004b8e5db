"""Where the real score goes: model SE quality vs separation, real set vs synthetic test."""
import sys, importlib.util, numpy as np, torch
from pathlib import Path
spec = importlib.util.spec_from_file_location("rst", "benchmarks/real_speech_transfer.py")
rst = importlib.util.module_from_spec(spec); sys.modules["rst"] = rst; spec.loader.exec_module(rst)
from usgm import load_model
from usgm.losses import si_snr, pit_si_snr
torch.set_num_threads(2)
model, _ = load_model(sys.argv[1]); model.eval()
def sets():
    items = rst.load_set(Path("data/real_speech/mix/real2mix_dev"))
    yield "real", rst.mixtures_from_set(items)
    yield "synth", list(rst.synthetic_mixtures(Path(sys.argv[2] if len(sys.argv) > 2 else "data/default_2mix"), 2, 100))
for name, mixes in sets():
    r = {k: [] for k in ["sep", "model_denoise", "oracle_denoise", "enh_vs_clean", "mix_vs_clean", "oracle_mask_on_enh"]}
    for _, mix, srcs in mixes:
        x = torch.as_tensor(mix, dtype=torch.float32)[None]
        s = torch.as_tensor(srcs, dtype=torch.float32)[None]
        with torch.no_grad():
            out = model.model(x) if hasattr(model, "model") else model(x)
            est = out.est
            whole = model_dec = (model.model if hasattr(model, "model") else model).decode(out.enhanced, torch.ones_like(est[:, :1, None, :1]).expand(1, 1, out.enhanced.shape[1], out.enhanced.shape[2]), x.shape[-1])[:, 0]
        base = si_snr(x.expand(2, -1), s[0]).mean()
        sep, _ = pit_si_snr(est, s)
        clean = s.sum(1)
        r["sep"].append(float(sep.mean() - base))
        r["model_denoise"].append(float(si_snr(whole.expand(2, -1), s[0]).mean() - base))
        r["oracle_denoise"].append(float(si_snr(clean.expand(2, -1), s[0]).mean() - base))
        r["enh_vs_clean"].append(float(si_snr(whole, clean)))
        r["mix_vs_clean"].append(float(si_snr(x, clean)))
    print(name, {k: round(float(np.mean(v)), 2) for k, v in r.items() if v})
