"""Prototype: eSpeak phoneme events -> MBROLA .pho -> mbrola binary."""
import ctypes, struct, subprocess, sys, io
import numpy as np, soundfile as sf
sys.path.insert(0, '/work/main')
from usgm.data.synth import espeak as E
from usgm.data.synth import text as T, dsp

ROOT = '/tmp/mb/root'
EDATA = ROOT + '/usr/lib/x86_64-linux-gnu/espeak-ng-data'
VOWEL0 = set("aeiouyAEIOUVY@03&{Q9")

class EV(ctypes.Structure):
    _fields_ = [('type', ctypes.c_int), ('uid', ctypes.c_uint), ('text_position', ctypes.c_int),
                ('length', ctypes.c_int), ('audio_position', ctypes.c_int), ('sample', ctypes.c_int),
                ('user_data', ctypes.c_void_p), ('id', ctypes.c_char * 8)]

def word(i):
    return (i & 0xffffffff).to_bytes(4, 'little').rstrip(b'\0').decode('latin1')

def load_phtrans(path):
    d = open(path, 'rb').read()
    ints = struct.unpack('<%di' % (len(d) // 4), d)
    tab = []
    for k in range(1, len(ints) - 5, 6):
        n, nx, m1, m2, pc, ct = ints[k:k + 6]
        if n == 0: break
        tab.append((word(n), nx, word(m1), word(m2), pc, ct))
    return tab

def is_vowel(m): return m[:1] in VOWEL0

def mbr_name(tab, ph, prev, nxt, newword):
    for n, nx, m1, m2, pc, ct in tab:
        if n != ph: continue
        found = False
        if nx == 0: found = True
        else:
            other = prev if ct & 2 else nxt
            if nx == 2: found = other is not None and is_vowel(other)
            elif word(nx) == '_': found = other is None or other.startswith('_')
            else: found = other == word(nx)
        if ct & 4 and not newword: found = False
        if found: return m1, m2, pc, ct
    return ph, '', 0, 0

class Synth:
    def __init__(self):
        self.e = E.Espeak()
        lib = self.e._lib
        lib.espeak_ng_SetPhonemeEvents.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetPhonemeEvents(1, 0)
        self.events = []
        def collect(wav, n, evp):
            if n > 0: self.e._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            p = ctypes.cast(evp, ctypes.POINTER(EV)); i = 0
            while p[i].type != 0:
                self.events.append((p[i].type, p[i].sample, p[i].id))
                i += 1
            return 0
        self.e._callback = E._CALLBACK(collect); lib.espeak_SetSynthCallback(self.e._callback)

    def phonemes(self, text, lang, rate):
        self.events = []
        x = self.e.synth(text, lang, rate=rate)
        phs = []; newword = True
        for t, s, ident in self.events:
            if t == 1: newword = True
            if t != 7: continue
            m = ident.decode('latin1'); stress = 0
            while m[:1] in ("'", ","):
                stress = max(stress, 2 if m[0] == "'" else 1); m = m[1:]
            phs.append([m, s, stress, newword]); newword = False
        out = []
        for i, (m, s, st, nw) in enumerate(phs):
            end = phs[i + 1][1] if i + 1 < len(phs) else len(x)
            out.append((m, (end - s) / self.e.sample_rate * 1000, st, nw))
        return out

def to_pho(phs, tab, rng, f0):
    lines = []; i = 0
    # phrase-level declination: reset at pauses
    n = len(phs)
    phrase_pos = []
    start = 0
    for k in range(n + 1):
        if k == n or phs[k][0].startswith('_'):
            L = max(k - start, 1)
            phrase_pos += [j / L for j in range(k - start)]
            if k < n: phrase_pos.append(0.0)
            start = k + 1
    skip = False
    for k, (m, dur, st, nw) in enumerate(phs):
        if skip: skip = False; continue
        if m.startswith('_'):
            lines.append(f"_ {max(int(dur), 10)}"); continue
        prev = phs[k - 1][0] if k else None
        nxt = phs[k + 1][0] if k + 1 < n else None
        m1, m2, pc, ct = mbr_name(tab, m, prev, nxt, nw)
        if ct & 1 and k + 1 < n:
            dur += phs[k + 1][1]; skip = True
        p = phrase_pos[k]
        f = f0 * (1.12 - 0.25 * p)
        if st == 2: f *= 1 + rng.uniform(0.1, 0.35)
        elif st == 1: f *= 1 + rng.uniform(0.0, 0.12)
        f *= np.exp(rng.normal(0, 0.03))
        if not m1: continue
        if m2:
            d1 = dur * pc / 100
            lines.append(f"{m1} {max(int(d1),5)} 50 {f:.0f}")
            lines.append(f"{m2} {max(int(dur-d1),5)} 50 {f*0.97:.0f}")
        else:
            lines.append(f"{m1} {max(int(dur),5)} 50 {f:.0f}")
    return "\n".join(lines) + "\n_ 50\n"

def render(pho, voice):
    import tempfile, os
    with tempfile.TemporaryDirectory() as td:
        out = os.path.join(td, 'o.wav')
        r = subprocess.run([ROOT + '/usr/bin/mbrola', '-e', f'{ROOT}/usr/share/mbrola/{voice}/{voice}', '-', out],
                           input=pho.encode(), capture_output=True)
        if r.returncode != 0: raise RuntimeError(r.stderr.decode()[:500])
        x, sr = sf.read(out, dtype='float64')
    return x, sr, r.stderr.decode()

if __name__ == '__main__':
    s = Synth(); rng = np.random.default_rng(0)
    for voice, lang, tl, trans, f0 in [('us1','en-us','en','us_phtrans',200), ('us2','en-us','en','us_phtrans',110),
                                       ('de1','de','de','de2_phtrans',200), ('fr4','fr','fr','fr_phtrans',210)]:
        tab = load_phtrans(f'{EDATA}/mbrola_ph/{trans}')
        txt = T.make_sentence(rng, 25, tl)
        phs = s.phonemes(txt, lang, 170)
        pho = to_pho(phs, tab, rng, f0)
        x, sr, err = render(pho, voice)
        print(voice, sr, len(x)/sr, 'errs', err.count('\n'), err[:300].replace('\n', ' | '))
        sf.write(f'/tmp/mb/proto/{voice}.wav', x, sr)
        print(txt); print(pho[:200].replace('\n',' | '))
