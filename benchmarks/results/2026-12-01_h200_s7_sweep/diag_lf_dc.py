"""Does the model still lose the real sources' lowest frequencies? Separation SI-SNRi and SE gain
(the sum of the outputs against the clean mixture, over the noisy input) on the real set as
built, with each source's mean removed, and high-passed at 20 / 60 Hz (sources, and so the
mixture, alike; the noise untouched).
usage: python diag_lf_dc.py CKPT
"""
import numpy as np
import torch
from scipy.signal import sosfilt

from _diag import model, real_mixtures
from usgm.data.synth import dsp
from usgm.losses import pit_si_snr, si_snr

MIXES = real_mixtures()


def run(name, f):
    sep, gain = [], []
    for _, mix, srcs in MIXES:
        noise = mix - srcs.sum(0)
        srcs = np.stack([f(s) for s in srcs]).astype(np.float32)
        x = torch.from_numpy(srcs.sum(0) + noise)[None]
        s = torch.from_numpy(srcs)[None]
        with torch.inference_mode():
            est = model(x).est
        base = si_snr(x.expand(2, -1), s[0]).mean()
        best, _ = pit_si_snr(est, s)
        sep.append(float(best.mean() - base))
        gain.append(float(si_snr(est.sum(1), s.sum(1)) - si_snr(x, s.sum(1))))
    print(f"{name:28s} sep {np.mean(sep):+.2f}  SE gain {np.mean(gain):+.2f}", flush=True)


def hp(fc):
    return lambda x: sosfilt(dsp.biquad("highpass", fc, 8000, q=0.6), x)


run("as is", lambda x: x)
run("sources mean removed", lambda x: x - x.mean())
run("sources high-passed 20 Hz", hp(20))
run("sources high-passed 60 Hz", hp(60))
