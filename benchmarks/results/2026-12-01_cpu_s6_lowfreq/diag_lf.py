import sys, importlib.util, numpy as np, torch
from pathlib import Path
from scipy.signal import sosfilt
spec = importlib.util.spec_from_file_location("rst", "benchmarks/real_speech_transfer.py")
rst = importlib.util.module_from_spec(spec); sys.modules["rst"] = rst; spec.loader.exec_module(rst)
from usgm import load_model
from usgm.losses import si_snr, pit_si_snr
from usgm.data.synth import dsp
torch.set_num_threads(2)
m, _ = load_model(sys.argv[1]); m = getattr(m, "model", m).eval()
items = rst.load_set(Path("data/real_speech/mix/real2mix_dev"))
mixes = rst.mixtures_from_set(items)
def run(name, f, filt_noise=False, data=mixes):
    sep, den = [], []
    for _, mix, srcs in data:
        noise = mix - srcs.sum(0)
        srcs = np.stack([f(s) for s in srcs]).astype(np.float32)
        if filt_noise: noise = f(noise)
        mix = srcs.sum(0) + noise
        x = torch.as_tensor(mix, dtype=torch.float32)[None]; s = torch.as_tensor(srcs)[None]
        with torch.no_grad(): out = m(x)
        base = si_snr(x.expand(2, -1), s[0]).mean()
        p, _ = pit_si_snr(out.est, s)
        sep.append(float(p.mean() - base)); den.append(float(si_snr(out.est.sum(1), s.sum(1)) - si_snr(x, s.sum(1))))
    print(f"{name:28s} sep {np.mean(sep):+.2f}  SE gain {np.mean(den):+.2f}", flush=True)
hp = lambda fc: (lambda x: sosfilt(dsp.biquad("highpass", fc, 8000, q=0.6), x))
run("as is", lambda x: x)
for fc in (60, 100, 150, 250):
    run(f"sources high-passed {fc} Hz", hp(fc))
run("sources+noise hp 100", hp(100), True)
run("high shelf +5 dB @2.4k", lambda x: sosfilt(dsp.biquad("highshelf", 2400, 8000, gain_db=5), x))
syn = list(rst.synthetic_mixtures(Path("data/default_2mix"), 2, 100))
run("SYNTH as is", lambda x: x, data=syn)
run("SYNTH low shelf +6 dB @150", lambda x: sosfilt(dsp.biquad("lowshelf", 150, 8000, gain_db=6), x), data=syn)
run("SYNTH low shelf +10 dB @120", lambda x: sosfilt(dsp.biquad("lowshelf", 120, 8000, gain_db=10), x), data=syn)
