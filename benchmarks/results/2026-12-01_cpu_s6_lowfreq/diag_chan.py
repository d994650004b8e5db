"""Real sources through the generator's channel chain (and other variants): does the model transfer then?"""
import sys, importlib.util, numpy as np, torch, dataclasses
from pathlib import Path
spec = importlib.util.spec_from_file_location("rst", "benchmarks/real_speech_transfer.py")
rst = importlib.util.module_from_spec(spec); sys.modules["rst"] = rst; spec.loader.exec_module(rst)
from usgm import load_model
from usgm.losses import si_snr, pit_si_snr
from usgm.data.synth.options import SynthOptions
from usgm.data.synth.speech import apply_channel
from usgm.data.synth import dsp
torch.set_num_threads(2)
m, _ = load_model(sys.argv[1]); m = getattr(m, "model", m).eval()
items = rst.load_set(Path("data/real_speech/mix/real2mix_dev"))
variants = {
  "as_is": None,
  "chain": SynthOptions(),
  "chain_nocodec": SynthOptions(codec=0.0),
  "eq_only": SynthOptions(level_db=0, reverb=0, band_limit=0, room_tone_db=None, codec=0.0),
  "reverb_all": SynthOptions(level_db=0, reverb=1.0, eq_db=0, band_limit=0, room_tone_db=None, codec=0.0),
  "codec_all": SynthOptions(level_db=0, reverb=0, eq_db=0, band_limit=0, room_tone_db=None, codec=1.0),
  "tone_only": SynthOptions(level_db=0, reverb=0, eq_db=0, band_limit=0, codec=0.0),
  "no_noise": "clean",
}
for name, opts in variants.items():
    rng = np.random.default_rng(0)
    sep, den = [], []
    for _, mix, srcs in rst.mixtures_from_set(items):
        noise = mix - srcs.sum(0)
        if isinstance(opts, SynthOptions):
            new = []
            for s in srcs:
                y = apply_channel(s.astype(np.float64), rng, 8000, opts)[: len(s)]
                new.append(y * np.sqrt((s ** 2).mean() / ((y ** 2).mean() + 1e-12)))
            srcs = np.stack(new).astype(np.float32)
        if opts == "clean":
            noise = noise * 0
        mix = srcs.sum(0) + noise
        x = torch.as_tensor(mix, dtype=torch.float32)[None]; s = torch.as_tensor(srcs)[None].float()
        with torch.no_grad():
            out = m(x)
        base = si_snr(x.expand(2, -1), s[0]).mean()
        p, _ = pit_si_snr(out.est, s)
        sep.append(float(p.mean() - base))
        den.append(float(si_snr(out.est.sum(1), s.sum(1)) - si_snr(x, s.sum(1))))
    print(f"{name:14s} sep SI-SNRi {np.mean(sep):+.2f}   SE gain on the mixture {np.mean(den):+.2f}")
