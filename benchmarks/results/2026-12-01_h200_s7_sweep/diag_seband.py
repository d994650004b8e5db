"""Where the SE stage fails on real speech: error energy of the enhanced mixture (sum of the
outputs: softmax SS masks) against the noisy input's, per frequency band, real vs synthetic.
usage: python diag_seband.py CKPT [SYNTH_ROOT]
"""
import numpy as np
import torch

from _diag import model, sets

EDGES = [0, 100, 300, 700, 1500, 2500, 3200, 4001]


def band_energy(x):
    S = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 8000)
    return np.array([S[(f >= a) & (f < b)].sum() for a, b in zip(EDGES[:-1], EDGES[1:])])


print("bands (Hz)", EDGES)
for name, mixes in sets():
    e_in, e_out, e_sp, e_sup = 0, 0, 0, 0
    with torch.inference_mode():
        for _, mix, srcs in mixes:
            enh = model(torch.from_numpy(mix)[None]).est.sum(1)[0].numpy()
            clean = srcs.sum(0)
            enh = enh * np.dot(enh, clean) / np.dot(enh, enh)  # scale-invariant, as SI-SNR
            e_in = e_in + band_energy(mix - clean)
            e_out = e_out + band_energy(enh - clean)
            e_sp = e_sp + band_energy(clean)
            e_sup = e_sup + band_energy(enh)
    db = lambda a, b: np.round(10 * np.log10(a / b), 1)  # noqa: E731
    print(f"{name:5s} noise→error change (dB) {db(e_out, e_in)}")
    print(f"{name:5s} input SNR per band (dB)  {db(e_sp, e_in)}")
    print(f"{name:5s} output/clean energy (dB) {db(e_sup, e_sp)}")
