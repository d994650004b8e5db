"""Does the model separate locally but lose track of the speakers over an utterance?

Scores per mixture: whole-utterance PIT SI-SNRi; the same output scored in 1 s windows with
PIT per window (local separation, speaker tracking forgiven); and the model run on each 1 s
window of the input on its own. Real set vs synthetic test.
usage: python diag_window.py CKPT [SYNTH_ROOT]
"""
import numpy as np
import torch

from _diag import model, sets
from usgm.losses import pit_si_snr, si_snr

W = 8000


def win_score(est, ref, mix):
    vals = []
    for a in range(0, ref.shape[-1] - W + 1, W):
        r = ref[..., a : a + W]
        if (r.pow(2).sum(-1) < 1e-6).any():
            continue
        best, _ = pit_si_snr(est[..., a : a + W], r)
        vals.append(float(best - si_snr(mix[..., a : a + W].expand_as(r), r).mean(-1)))
    return vals


for name, mixes in sets():
    full, win, chunked = [], [], []
    with torch.inference_mode():
        for _, mix, srcs in mixes:
            x = torch.from_numpy(mix)[None]
            s = torch.from_numpy(srcs)[None]
            est = model(x).est
            best, _ = pit_si_snr(est, s)
            full.append(float(best - si_snr(x.expand_as(s), s).mean(-1)))
            win += win_score(est, s, x)
            n = x.shape[-1] // W * W
            if n:
                xs = x[:, :n].reshape(-1, W)
                es = model(xs).est  # (K, C, W)
                est_c = es.permute(1, 0, 2).reshape(1, es.shape[1], n)
                chunked += win_score(est_c, s[..., :n], x[:, :n])
    print(f"{name}: full {np.mean(full):+.2f} (n={len(full)})  1s-windows of full output "
          f"{np.mean(win):+.2f} (n={len(win)})  model on 1s windows {np.mean(chunked):+.2f}")
