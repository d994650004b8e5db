"""Does the model still lose the real sources' lowest frequencies? Separation SI-SNRi and SE gain
on the real set as built, with each source's mean removed, and high-passed at 20 / 60 Hz
(mixture and references alike; helpers from session 6's diag_lf.py).
usage: python diag_lf_dc.py CKPT
"""
import sys  # noqa: F401  (used by the session-6 helpers)

exec(open("benchmarks/results/2026-12-01_cpu_s6_lowfreq/diag_lf.py").read().split('run("as is"')[0])
run("as is", lambda x: x)  # noqa: F821
run("sources mean removed", lambda x: x - x.mean())  # noqa: F821
run("sources high-passed 20 Hz", hp(20))  # noqa: F821
run("sources high-passed 60 Hz", hp(60))  # noqa: F821
