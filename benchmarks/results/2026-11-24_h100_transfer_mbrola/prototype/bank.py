"""Prototype: render MBROLA pseudo-speakers into a recorded_dir-style folder (Vorbis 8 kHz)."""
import sys, os, re, multiprocessing as mp
import numpy as np, soundfile as sf
sys.path.insert(0, '/tmp/mb/proto'); sys.path.insert(0, '/work/main')
VOICES = "us1 us2 us3 en1 de1 de2 de3 de4 de5 de8 es1 es2 es3 es4 mx1 mx2 vz1 fr1 fr2 fr3 fr4 fr5 fr6 fr7 it1 it2 it3 it4".split()
LANG = {'us': ('en-us', 'en'), 'en': ('en', 'en'), 'de': ('de', 'de'), 'es': ('es', 'es'), 'mx': ('es', 'es'),
        'vz': ('es', 'es'), 'fr': ('fr', 'fr'), 'it': ('it', 'it')}
BANDS = {'l': 0.82, 'm': 1.0, 'h': 1.22}
MB = '/tmp/mb/root/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/mb'

def info(v):
    txt = open(f'{MB}/mb-{v}').read()
    female = 'female' in txt
    trans = re.search(r'^mbrola\s+\S+\s+(\S+)', txt, re.M).group(1)
    return female, trans

def spk_id(v, band):
    return 'mb' + v[:2] + 'abcdefghij'[int(v[2])] + band

def work(args):
    v, band, seconds, out = args
    import mbr
    from usgm.data.synth import text as T, dsp
    female, trans = info(v)
    tab = mbr.load_phtrans(f'{mbr.EDATA}/mbrola_ph/{trans}')
    s = mbr.Synth()
    import zlib; seed = zlib.crc32(f'{v}{band}'.encode())
    rng = np.random.default_rng(seed)
    lang, tl = LANG[v[:2]]
    f0 = (200 if female else 115) * BANDS[band]
    folder = os.path.join(out, spk_id(v, band)); os.makedirs(folder, exist_ok=True)
    total = 0.0; k = 0
    while total < seconds:
        txt = T.make_sentence(rng, int(rng.integers(8, 20)), tl)
        phs = s.phonemes(txt, lang, int(rng.integers(140, 200)))
        x, sr, _ = mbr.render(mbr.to_pho(phs, tab, rng, f0 * np.exp(rng.normal(0, 0.05))), v)
        y = dsp.resample(x, sr, 8000)
        y = y / max(np.abs(y).max(), 1e-6) * 0.5
        sf.write(os.path.join(folder, f'{k:04d}.ogg'), y, 8000, format='OGG', subtype='VORBIS', compression_level=1.0)
        total += len(y) / 8000; k += 1
    return spk_id(v, band), k, total

if __name__ == '__main__':
    out = sys.argv[1]; seconds = float(sys.argv[2])
    jobs = [(v, b, seconds, out) for v in VOICES for b in BANDS]
    with mp.get_context('spawn').Pool(2) as pool:
        for r in pool.imap_unordered(work, jobs):
            print(*r, flush=True)
