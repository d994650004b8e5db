"""``usgm-compare``: compare training runs by method from their local files (no W&B needed).

Usage::

    usgm-compare RUN_DIR [RUN_DIR ...] [--out DIR] [--by KEY] [--reference METHOD]

Runs
    Every folder under each RUN_DIR (the folder itself included) that holds
    ``.hydra/config.yaml`` with a ``model`` section is one training run: a single run folder, a
    Hydra multirun folder (its numbered job folders), or any parent of such folders. The search
    does not descend into a run, so evaluation folders inside it are never taken for runs.
    Folders whose config has no ``model`` (``evaluate.py``'s own Hydra folders) are skipped with a
    note; a numbered job folder of a multirun (next to ``multirun.yaml``) that lacks
    ``.hydra/config.yaml`` is listed as a failed run.

What is read from a run folder ``<run>``
    - ``<run>/.hydra/config.yaml``: ``model.method`` (the method, an opaque string; fallback:
      ``method`` in ``results.json``), ``seed`` (pairs runs across methods), ``task_name``, and
      whatever ``--by`` names. ``<run>/.hydra/overrides.yaml`` is shown in the run list.
    - ``<run>/results.json`` (written by ``train.py`` at the end): ``metrics``,
      ``best_checkpoint``, ``last_checkpoint``.
    - Every ``metrics.csv`` under ``<run>`` (the CSV logger writes ``<run>/csv/metrics.csv``, or
      ``<run>/csv/version_*/metrics.csv``), merged in path order; a step logged twice (a resumed
      run) keeps the later value. Columns used: ``step``, ``val/si_snri`` and
      ``gm/<module>_conflict_frac`` / ``gm/<module>_cosine``.
    - Every ``final_metrics.json`` under ``<run>`` (written by ``evaluate.py``): SI-SNRi and SDRi
      are the means ``metrics.si_snr_i.mean`` and ``metrics.sdr_i.mean``.
    - Crash markers: a ``*.log``, ``*.err`` or ``*.out`` file directly in ``<run>`` that contains
      ``Traceback (most recent call last)`` or ``usgm: error:``.

Evaluated sets
    A ``final_metrics.json`` below a folder named ``eval`` belongs to the set named by the folder
    right under ``eval``: ``<run>/eval/<set>/final_metrics.json`` and
    ``<run>/eval/<set>/results/final_metrics.json`` (``evaluate.py`` run with
    ``results_dir=<run>/eval/<set>`` or ``hydra.run.dir=<run>/eval/<set>``) both give ``<set>``.
    Anywhere else (e.g. ``<run>/results/final_metrics.json``) the set is the json's ``split``
    (``data.split``), else its folder name. Two files of one run that get the same name are
    both named by their folder path relative to the run instead. When no evaluated set is called
    ``test``, the training job's own test score (``test/si_snri`` in ``results.json``; SDRi is not
    logged there, so it shows as "–") is the set ``test``; a set that mixes both sources is
    flagged in the notes.

Run status
    ``complete``: ``results.json`` present, a checkpoint recorded in it or present under
    ``<run>/checkpoints``, and a finite SI-SNRi on at least one set. Only complete runs enter
    the statistics. ``failed``: a crash marker and no ``results.json`` (a crash marker next to a
    ``results.json``, e.g. a crashed attempt that a resume finished, is only remarked on), or a
    non-finite test score (diverged). ``incomplete``: no ``results.json`` (still running or killed; the last logged step
    and a resumable ``last.ckpt`` are named), no checkpoint, or no score on any set. Every run is
    listed with its status and reason.

Statistics
    Runs are grouped by method (plus the ``--by`` config keys). Runs of one group with the same
    seed are averaged first, so each seed counts once. Per group and set: the number of seeds n,
    the mean and sample standard deviation (ddof=1) over seeds, and the paired difference to the
    reference method (``ss_only``; same ``--by`` values), matched by seed: the mean of the
    per-seed differences with a 95 % Student-t interval, mean ± t(0.975, n−1)·s_d/√n over the n
    seeds that both have; with n < 2 no interval is given.

Output (``--out``, default ``./usgm_compare``)
    ``summary.csv`` and ``summary.md`` (the table; the Markdown adds the run list and notes),
    ``runs.csv`` (one row per run), ``val_si_snri.png`` (validation SI-SNRi over training steps:
    mean over the complete runs' seeds per method, shaded ±1 std, thin lines the single seeds,
    dashed the runs that are not complete) and ``gm_telemetry.png`` (conflict fraction and cosine
    of g_SE·g_SS per module, mean over seeds) when those were logged. Curves of runs that stopped
    at different steps are interpolated onto the union of their steps. The table and the run list are also printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from usgm.evaluation.report import column_stats

REFERENCE = "ss_only"
# Known methods first, in the paper's order; any other method string follows alphabetically.
METHOD_ORDER = ("ss_only", "mtl", "gm", "gm_released")
# table metric → (key in final_metrics.json "metrics", key in results.json "metrics")
METRICS: dict[str, tuple[str, str]] = {
    "si_snri": ("si_snr_i", "test/si_snri"),
    "sdri": ("sdr_i", "test/sdri"),
}
LABELS = {"si_snri": "SI-SNRi", "sdri": "SDRi"}
VAL_KEY = "val/si_snri"
GM_COLUMN = re.compile(r"^gm/(?P<module>.+)_(?P<kind>conflict_frac|cosine)$")
CRASH_MARKERS = ("Traceback (most recent call last)", "usgm: error:")
CRASH_FILES = ("*.log", "*.err", "*.out")
DASH = "–"


# --------------------------------------------------------------------------------- data model
@dataclass
class SetScore:
    """One run's score on one evaluated set.

    Attributes:
        si_snri: mean SI-SNRi in dB (None when not available).
        sdri: mean SDRi in dB (None when not available).
        source: where it came from (path relative to the run, or ``results.json``).
        n_utterances: utterances scored, when known.
    """

    si_snri: float | None
    sdri: float | None
    source: str
    n_utterances: int | None = None


@dataclass
class Run:
    """One training run as read from its folder.

    Attributes:
        path: the run folder.
        method: ``model.method`` (None when unknown).
        seed: top-level ``seed`` of the config (None when unknown).
        config: the composed config as plain data (empty when unreadable).
        overrides: Hydra's command-line overrides of the job.
        status: ``complete``, ``incomplete`` or ``failed``.
        reasons: why a run is not complete (and other remarks about it).
        sets: evaluated set name → score.
        history: logged metric → (steps, values), sorted by step.
    """

    path: Path
    method: str | None = None
    seed: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    status: str = "incomplete"
    reasons: list[str] = field(default_factory=list)
    sets: dict[str, SetScore] = field(default_factory=dict)
    history: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.status == "complete"


@dataclass
class Interval:
    """A mean with its 95 % Student-t interval (None where undefined, e.g. n < 2)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int


@dataclass
class Row:
    """One line of the table: a method group on one evaluated set.

    Attributes:
        set: the evaluated set.
        method: the method string.
        by: the ``--by`` key → value of the group.
        runs_total: all runs of the group (any status).
        runs_complete: complete runs of the group.
        n: seeds with a score on this set (per metric).
        mean, std: over seeds, per metric (std None with n < 2).
        diff: paired difference to the reference per metric (None for the reference itself or
            when there is no reference group).
    """

    set: str
    method: str
    by: dict[str, str]
    runs_total: int
    runs_complete: int
    n: dict[str, int]
    mean: dict[str, float | None]
    std: dict[str, float | None]
    diff: dict[str, Interval | None]


# --------------------------------------------------------------------------------- statistics
def t_interval(values: Sequence[float]) -> Interval:
    """Mean and 95 % Student-t interval of ``values`` (no interval with fewer than 2).

    Args:
        values: finite numbers (e.g. per-seed paired differences).

    Returns:
        :class:`Interval`; ``mean`` None when ``values`` is empty.
    """
    stats = column_stats(values)  # the interval of the evaluation reports
    return Interval(stats["mean"], stats["ci95_low"], stats["ci95_high"], stats["n"])


def paired_difference(values: Mapping[Any, float], reference: Mapping[Any, float]) -> Interval:
    """Mean of ``values[s] - reference[s]`` over the seeds ``s`` both have, with its interval.

    Args:
        values: seed → score of the compared method.
        reference: seed → score of the reference method.

    Returns:
        :class:`Interval` over the paired differences (n = number of common seeds).
    """
    common = sorted(set(values) & set(reference), key=str)
    return t_interval([values[s] - reference[s] for s in common])


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------------- reading runs
def _load_yaml(path: Path) -> Any:
    # Plain YAML, not OmegaConf: the saved config holds unresolved interpolations
    # (${hydra:...}, custom resolvers) that cannot be resolved outside the job.
    with path.open() as f:
        return yaml.safe_load(f)


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text())  # accepts the NaN that json.dumps writes for a diverged run


def config_value(config: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted ``key`` (``data.n_src``) of a nested mapping, None when absent."""
    cur: Any = config
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(obj, Mapping):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(obj, sort_keys=True, default=str)}


def _is_run(path: Path) -> bool:
    return (path / ".hydra" / "config.yaml").is_file()


def discover(roots: Iterable[Path]) -> tuple[list[Path], list[Path], list[str]]:
    """Finds run folders under ``roots``.

    Args:
        roots: folders given on the command line.

    Returns:
        (run folders, numbered multirun job folders without a config, notes).
    """
    runs: list[Path] = []
    broken: list[Path] = []
    notes: list[str] = []

    def walk(d: Path) -> None:
        if _is_run(d):
            runs.append(d)
            return  # never descend: eval/<set>/.hydra inside a run is not a run
        children = sorted((c for c in d.iterdir() if c.is_dir()), key=_natural_key)
        if (d / "multirun.yaml").is_file():
            broken.extend(c for c in children if c.name.isdigit() and not _is_run(c))
        for c in children:
            if not c.name.startswith("."):
                walk(c)

    for root in roots:
        if not root.is_dir():
            notes.append(f"{root}: not a folder")
            continue
        before = len(runs) + len(broken)
        walk(root)
        if len(runs) + len(broken) == before:
            notes.append(f"{root}: no run folder (.hydra/config.yaml) found")
    seen: set[Path] = set()
    unique = [r for r in runs if not (r.resolve() in seen or seen.add(r.resolve()))]
    return unique, broken, notes


def _natural_key(p: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def read_history(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Merges every ``metrics.csv`` under a run into metric → (steps, values).

    Files are read in natural path order (``version_0`` before ``version_1``); when a step is
    logged twice (a run resumed into the same folder) the later value wins. Rows without a step
    and empty or non-numeric cells are ignored.
    """
    files = sorted(
        run_dir.rglob("metrics.csv"), key=lambda p: [_natural_key(Path(x)) for x in p.parts]
    )
    series: dict[str, dict[float, float]] = defaultdict(dict)
    for f in files:
        with f.open(newline="") as fh:
            for row in csv.DictReader(fh):
                step = _finite(row.get("step"))
                if step is None:
                    continue
                for key, cell in row.items():
                    if key in (None, "step", "epoch") or cell in (None, ""):
                        continue
                    v = _finite(cell)
                    if v is not None:
                        series[key][step] = v
    out = {}
    for key, points in series.items():
        steps = np.array(sorted(points), dtype=np.float64)
        out[key] = (steps, np.array([points[s] for s in steps], dtype=np.float64))
    return out


def _set_name(run_dir: Path, path: Path, summary: Mapping[str, Any]) -> str:
    parts = path.relative_to(run_dir).parts[:-1]  # folders between the run and the json
    if "eval" in parts[:-1]:
        return parts[parts.index("eval") + 1]
    split = summary.get("split") or config_value(summary, "data.split")
    if split:
        return str(split)
    return parts[-1] if parts else "results"


def read_sets(
    run_dir: Path, results: Mapping[str, Any] | None
) -> tuple[dict[str, SetScore], list[str]]:
    """The evaluated sets of a run (see the module docstring for the naming rule).

    Args:
        run_dir: the run folder.
        results: the content of ``results.json`` (None when absent).

    Returns:
        (set name → score, remarks about unreadable files).
    """
    remarks: list[str] = []
    found: list[tuple[str, Path, SetScore]] = []
    for path in sorted(run_dir.rglob("final_metrics.json")):
        rel = path.relative_to(run_dir)
        try:
            summary = _load_json(path)
        except (OSError, ValueError) as err:
            remarks.append(f"{rel}: unreadable ({err})")
            continue
        stats = summary.get("metrics", {}) if isinstance(summary, Mapping) else {}
        values = {}
        for name, (fm_key, _) in METRICS.items():
            entry = stats.get(fm_key)
            v = entry.get("mean") if isinstance(entry, Mapping) else None
            if v is None:  # older files: the flat "improvements" / "means" blocks
                v = (summary.get("improvements") or {}).get(fm_key)
            values[name] = _finite(v)
        score = SetScore(values["si_snri"], values["sdri"], str(rel), summary.get("n_utterances"))
        found.append((_set_name(run_dir, path, summary), path, score))
    names = [n for n, _, _ in found]
    sets: dict[str, SetScore] = {}
    for name, path, score in found:
        if names.count(name) > 1:  # ambiguous within this run: name each by its folder
            name = path.parent.relative_to(run_dir).as_posix()
        sets[name] = score
    if results is not None and "test" not in sets:
        m = results.get("metrics", {}) or {}
        if METRICS["si_snri"][1] in m:
            sets["test"] = SetScore(
                _finite(m.get(METRICS["si_snri"][1])),
                _finite(m.get(METRICS["sdri"][1])),
                "results.json",
            )
    return sets, remarks


def _crash_marker(run_dir: Path) -> str | None:
    for pattern in CRASH_FILES:
        for f in sorted(run_dir.glob(pattern)):
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            for marker in CRASH_MARKERS:
                if marker in text:
                    return f"{f.name} contains '{marker}'"
    return None


def _checkpoint(run_dir: Path, results: Mapping[str, Any] | None) -> bool:
    if results and (results.get("best_checkpoint") or results.get("last_checkpoint")):
        return True  # recorded by the job; the file itself may not have been copied here
    return any((run_dir / "checkpoints").glob("*.ckpt"))


def load_run(run_dir: Path) -> Run:
    """Reads one run folder and decides its status.

    Args:
        run_dir: a folder with ``.hydra/config.yaml``.

    Returns:
        :class:`Run`.
    """
    run = Run(path=run_dir)
    try:
        run.config = _load_yaml(run_dir / ".hydra" / "config.yaml") or {}
    except (OSError, yaml.YAMLError) as err:
        run.status = "failed"
        run.reasons.append(f"unreadable .hydra/config.yaml ({err})")
        return run
    try:
        over = run_dir / ".hydra" / "overrides.yaml"
        run.overrides = [str(o) for o in (_load_yaml(over) or [])] if over.is_file() else []
    except (OSError, yaml.YAMLError):
        run.overrides = []
    seed = config_value(run.config, "seed")
    run.seed = int(seed) if isinstance(seed, int | float) and not isinstance(seed, bool) else None
    method = config_value(run.config, "model.method")

    results: dict[str, Any] | None = None
    res_path = run_dir / "results.json"
    if res_path.is_file():
        try:
            results = _load_json(res_path)
        except (OSError, ValueError) as err:
            run.reasons.append(f"unreadable results.json ({err})")
    run.method = str(method or (results or {}).get("method") or "") or None
    run.history = read_history(run_dir)
    run.sets, remarks = read_sets(run_dir, results)

    crash = _crash_marker(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    if crash and results is None:
        run.status = "failed"
        run.reasons.append(f"crashed: {crash}")
    elif results is None:
        run.status = "incomplete"
        steps = [int(s[-1]) for s, _ in run.history.values() if len(s)]
        why = "no results.json (still running, killed or crashed)"
        if steps:
            why += f"; last logged step {max(steps)}"
        if (ckpt_dir / "last.ckpt").is_file():
            why += "; resumable from checkpoints/last.ckpt"
        run.reasons.append(why)
    else:
        test = (results.get("metrics") or {}).get(METRICS["si_snri"][1])
        if test is not None and _finite(test) is None:
            run.status = "failed"
            run.reasons.append(f"non-finite test/si_snri ({test}): diverged")
        elif not _checkpoint(run_dir, results):
            run.status = "incomplete"
            run.reasons.append("no checkpoint (none recorded in results.json or in checkpoints/)")
        elif not any(s.si_snri is not None for s in run.sets.values()):
            run.status = "incomplete"
            run.reasons.append("no SI-SNRi on any set (no test metric, no final_metrics.json)")
        else:
            run.status = "complete"
        if crash:  # the job still got to results.json (e.g. an attempt crashed, a resume finished)
            run.reasons.append(f"{crash}; results.json was written all the same")
    run.reasons.extend(remarks)
    if run.method is None:
        run.reasons.append("method unknown (no model.method in the config)")
    return run


def collect(roots: Sequence[Path]) -> tuple[list[Run], list[str]]:
    """Finds and reads every run under ``roots``.

    Returns:
        (runs in discovery order, notes about skipped folders).
    """
    paths, broken, notes = discover(roots)
    runs: list[Run] = []
    for p in paths:
        if _is_eval_run(p):
            notes.append(f"{p}: an evaluate.py folder, not a training run (skipped)")
            continue
        runs.append(load_run(p))
    for b in broken:
        runs.append(
            Run(path=b, status="failed", reasons=["multirun job folder without .hydra/config.yaml"])
        )
    return runs, notes


def _is_eval_run(path: Path) -> bool:
    try:
        cfg = _load_yaml(path / ".hydra" / "config.yaml") or {}
    except (OSError, yaml.YAMLError):
        return False
    return "model" not in cfg and "results_dir" in cfg


# --------------------------------------------------------------------------------- the table
def method_order(methods: Iterable[str]) -> list[str]:
    """Known methods in the paper's order, then the rest alphabetically."""
    ms = set(methods)
    known = [m for m in METHOD_ORDER if m in ms]
    return known + sorted(ms - set(known))


def _group_key(run: Run, by: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    return (run.method or "unknown", tuple(str(config_value(run.config, k)) for k in by))


def summarize(runs: Sequence[Run], by: Sequence[str] = (), reference: str = REFERENCE) -> list[Row]:
    """The table: one row per evaluated set and method group.

    Args:
        runs: every run (any status; only complete ones enter the statistics, and runs of
            unknown method, e.g. a job folder without a config, are left to the run list).
        by: extra config keys that split a method into groups (e.g. ``data.n_src``).
        reference: the method the paired differences are taken against.

    Returns:
        Rows ordered by set (``test`` first, then alphabetically) and method.
    """
    groups: dict[tuple[str, tuple[str, ...]], list[Run]] = defaultdict(list)
    for r in runs:
        if r.method is not None:  # a run of unknown method appears in the run list only
            groups[_group_key(r, by)].append(r)
    set_names = sorted(
        {s for r in runs if r.complete for s in r.sets}, key=lambda s: (s != "test", s)
    )
    order = {m: i for i, m in enumerate(method_order(m for m, _ in groups))}
    keys = sorted(groups, key=lambda k: (k[1], order[k[0]]))

    def per_seed(group: Sequence[Run], set_name: str, metric: str) -> dict[Any, float]:
        acc: dict[Any, list[float]] = defaultdict(list)
        for r in group:
            score = r.sets.get(set_name) if r.complete else None
            v = getattr(score, metric) if score else None
            if v is not None:
                acc[r.seed if r.seed is not None else ("run", str(r.path))].append(v)
        return {s: float(np.mean(v)) for s, v in acc.items()}

    rows: list[Row] = []
    for set_name in set_names:
        for key in keys:
            method, by_vals = key
            group = groups[key]
            ref_group = groups.get((reference, by_vals))
            n, mean, std, diff = {}, {}, {}, {}
            for metric in METRICS:
                vals = per_seed(group, set_name, metric)
                x = np.array(list(vals.values()), dtype=np.float64)
                n[metric] = int(x.size)
                mean[metric] = float(x.mean()) if x.size else None
                std[metric] = float(x.std(ddof=1)) if x.size >= 2 else None
                if method == reference or ref_group is None:
                    diff[metric] = None
                else:
                    ref = per_seed(ref_group, set_name, metric)
                    # runs without a seed cannot be paired
                    diff[metric] = paired_difference(
                        {s: v for s, v in vals.items() if not isinstance(s, tuple)},
                        {s: v for s, v in ref.items() if not isinstance(s, tuple)},
                    )
            rows.append(
                Row(
                    set=set_name,
                    method=method,
                    by=dict(zip(by, by_vals)),
                    runs_total=len(group),
                    runs_complete=sum(r.complete for r in group),
                    n=n,
                    mean=mean,
                    std=std,
                    diff=diff,
                )
            )
    if not set_names:  # no complete run at all: still one line per group, so none vanishes
        for method, by_vals in keys:
            group = groups[(method, by_vals)]
            none = dict.fromkeys(METRICS)
            rows.append(
                Row(
                    DASH,
                    method,
                    dict(zip(by, by_vals)),
                    len(group),
                    0,
                    dict.fromkeys(METRICS, 0),
                    none,
                    dict(none),
                    dict(none),
                )
            )
    return rows


def consistency_notes(runs: Sequence[Run], by: Sequence[str] = ()) -> list[str]:
    """Warnings about what would make the comparison unfair or ambiguous.

    Names config keys that differ between runs of one method group (other than the seed and
    paths), seeds with more than one complete run, complete runs without a score on a set
    that other runs have, and sets whose scores come from both ``evaluate.py`` and the
    training job's own test.
    """
    notes: list[str] = []
    ignore = re.compile(r"^(seed|data\.seed|paths\.|hydra\.|tags|ckpt_path|task_name)")
    groups: dict[tuple[str, tuple[str, ...]], list[Run]] = defaultdict(list)
    for r in runs:
        if r.complete:
            groups[_group_key(r, by)].append(r)
    for (method, by_vals), group in sorted(groups.items()):
        label = method + (f" ({', '.join(f'{k}={v}' for k, v in zip(by, by_vals))})" if by else "")
        flats = [_flatten(r.config) for r in group]
        keys = sorted({k for f in flats for k in f})
        differ = [
            k
            for k in keys
            if not ignore.match(k) and len({f.get(k, "<absent>") for f in flats}) > 1
        ]
        if differ:
            shown = ", ".join(differ[:8]) + (f" … ({len(differ)} keys)" if len(differ) > 8 else "")
            notes.append(f"{label}: runs differ in {shown} (split them with --by KEY)")
        seeds = [r.seed for r in group if r.seed is not None]
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            notes.append(f"{label}: several complete runs for seed(s) {dup}: averaged per seed")
        if any(r.seed is None for r in group):
            notes.append(
                f"{label}: run(s) without a seed: in mean ± std, not in the paired difference"
            )
        # A complete run without a score on a set the others have (e.g. evaluated before the
        # set was available) leaves that set's statistics: say which seeds are missing.
        for name in sorted({s for g in groups.values() for r in g for s in r.sets}):
            missing = [r for r in group if name not in r.sets]
            if missing:
                who = sorted(str(r.seed) for r in missing)
                notes.append(
                    f"{label}: {len(missing)} complete run(s) not scored on {name} "
                    f"(seed {', '.join(who)}): left out of that set's statistics"
                )
    sources: dict[str, set[str]] = defaultdict(set)
    for r in runs:
        if r.complete:
            for name, score in r.sets.items():
                sources[name].add("train" if score.source == "results.json" else "eval")
    for name, kinds in sorted(sources.items()):
        if len(kinds) > 1:
            notes.append(
                f"set {name}: some runs scored by evaluate.py, some only by the training job's "
                "test (results.json); compare with care"
            )
    return notes


def _fmt(x: float | None, sign: bool = False) -> str:
    if x is None:
        return DASH
    return f"{x:+.2f}" if sign else f"{x:.2f}"


def _fmt_mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return DASH
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _fmt_diff(d: Interval | None, is_reference: bool) -> str:
    if is_reference:
        return "(reference)"
    if d is None or d.mean is None:
        return DASH
    if d.low is None:
        return f"{d.mean:+.2f} (n={d.n}, no interval)"
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] (n={d.n})"


def _display_rows(
    rows: Sequence[Row], by: Sequence[str], reference: str
) -> tuple[list[str], list[list[str]]]:
    header = [
        "set",
        "method",
        *by,
        "runs",
        "n",
        "SI-SNRi (dB)",
        "SDRi (dB)",
        f"Δ SI-SNRi vs {reference} (95 % CI)",
        f"Δ SDRi vs {reference} (95 % CI)",
    ]
    body = []
    for r in rows:
        is_ref = r.method == reference
        n = (
            r.n["si_snri"]
            if r.n["si_snri"] == r.n["sdri"] or not r.n["sdri"]
            else f"{r.n['si_snri']}/{r.n['sdri']}"
        )
        body.append(
            [
                r.set,
                r.method,
                *(r.by[k] for k in by),
                f"{r.runs_complete}/{r.runs_total} complete",
                str(n),
                _fmt_mean_std(r.mean["si_snri"], r.std["si_snri"]),
                _fmt_mean_std(r.mean["sdri"], r.std["sdri"]),
                _fmt_diff(r.diff["si_snri"], is_ref),
                _fmt_diff(r.diff["sdri"], is_ref),
            ]
        )
    return header, body


def format_text(rows: Sequence[Row], by: Sequence[str] = (), reference: str = REFERENCE) -> str:
    """The table as aligned plain text."""
    header, body = _display_rows(rows, by, reference)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def format_markdown(rows: Sequence[Row], by: Sequence[str] = (), reference: str = REFERENCE) -> str:
    """The table as a Markdown (GitHub) table."""
    header, body = _display_rows(rows, by, reference)
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in body]
    return "\n".join(out)


def csv_columns(by: Sequence[str] = ()) -> list[str]:
    """Columns of ``summary.csv``."""
    cols = ["set", "method", *by, "runs_total", "runs_complete"]
    for m in METRICS:
        cols += [f"{m}_n", f"{m}_mean", f"{m}_std"]
    for m in METRICS:
        cols += [f"d_{m}_mean", f"d_{m}_ci_low", f"d_{m}_ci_high", f"d_{m}_n"]
    return cols


def write_summary_csv(rows: Sequence[Row], path: Path, by: Sequence[str] = ()) -> None:
    """Writes the table as CSV (numbers unrounded; empty cells where undefined)."""
    blank = lambda x: "" if x is None else x  # noqa: E731
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=csv_columns(by))
        w.writeheader()
        for r in rows:
            rec: dict[str, Any] = {
                "set": r.set,
                "method": r.method,
                **r.by,
                "runs_total": r.runs_total,
                "runs_complete": r.runs_complete,
            }
            for m in METRICS:
                rec.update(
                    {f"{m}_n": r.n[m], f"{m}_mean": blank(r.mean[m]), f"{m}_std": blank(r.std[m])}
                )
                d = r.diff[m]
                rec.update(
                    {
                        f"d_{m}_mean": blank(d and d.mean),
                        f"d_{m}_ci_low": blank(d and d.low),
                        f"d_{m}_ci_high": blank(d and d.high),
                        f"d_{m}_n": "" if d is None else d.n,
                    }
                )
            w.writerow(rec)


def write_runs_csv(runs: Sequence[Run], path: Path, by: Sequence[str] = ()) -> None:
    """Writes one row per run: folder, method, seed, status, reasons and every set's scores."""
    set_names = sorted({s for r in runs for s in r.sets}, key=lambda s: (s != "test", s))
    cols = ["run", "method", "seed", *by, "status", "reasons", "overrides"]
    for s in set_names:
        cols += [f"{s}/si_snri", f"{s}/sdri", f"{s}/source"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in runs:
            rec: dict[str, Any] = {
                "run": str(r.path),
                "method": r.method or "",
                "seed": "" if r.seed is None else r.seed,
                **{k: str(config_value(r.config, k)) for k in by},
                "status": r.status,
                "reasons": "; ".join(r.reasons),
                "overrides": " ".join(r.overrides),
            }
            for s, score in r.sets.items():
                rec[f"{s}/si_snri"] = "" if score.si_snri is None else score.si_snri
                rec[f"{s}/sdri"] = "" if score.sdri is None else score.sdri
                rec[f"{s}/source"] = score.source
            w.writerow(rec)


def format_run_list(runs: Sequence[Run], markdown: bool = False) -> str:
    """One line per run with its status (and why it is not complete)."""
    lines = []
    for r in runs:
        seed = "?" if r.seed is None else r.seed
        text = f"{r.status:<10s} {r.method or '?'} seed={seed}  {r.path}"
        if r.reasons:
            text += "  — " + "; ".join(r.reasons)
        lines.append(f"- `{r.status}` {text[11:]}" if markdown else text)
    return "\n".join(lines)


# --------------------------------------------------------------------------------- plots
def _on_grid(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Interpolates curves onto the union of their steps (NaN outside each curve's own range).

    Runs stopped by a time budget end at different steps, so a plain stack would not line up.
    """
    grid = np.unique(np.concatenate([s for s, _ in curves]))
    ys = np.full((len(curves), grid.size), np.nan)
    for i, (s, v) in enumerate(curves):
        inside = (grid >= s[0]) & (grid <= s[-1])
        ys[i, inside] = np.interp(grid[inside], s, v)
    return grid, ys


def _column_stats(ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step mean and sample std over the curves that cover the step (NaN where undefined)."""
    ok = np.isfinite(ys)
    count = ok.sum(axis=0)
    total = np.where(ok, ys, 0.0).sum(axis=0)
    mean = np.full(ys.shape[1], np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    sq = np.where(ok, (ys - mean) ** 2, 0.0).sum(axis=0)
    std = np.full(ys.shape[1], np.nan)
    np.sqrt(np.divide(sq, count - 1, out=std, where=count > 1), out=std, where=count > 1)
    return mean, std


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or y.size < k:
        return y
    kernel = np.ones(k) / k
    ok = np.isfinite(y)
    num = np.convolve(np.where(ok, y, 0.0), kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok & (den > 0), num / den, np.nan)


def _by_method(
    runs: Sequence[Run], key: str, by: Sequence[str]
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for r in runs:
        if key in r.history and len(r.history[key][0]):
            method, vals = _group_key(r, by)
            label = method + (f" ({', '.join(f'{k}={v}' for k, v in zip(by, vals))})" if by else "")
            out[label].append(r.history[key])
    return out


def plot_validation(runs: Sequence[Run], path: Path, by: Sequence[str] = ()) -> Path | None:
    """PNG of validation SI-SNRi over training steps per method: mean over seeds, ±1 std band.

    The mean and band are over complete runs (thin solid lines: their seeds). Runs that are not
    complete are drawn as dashed lines of their own, outside the mean, so one that stopped early
    neither disappears nor drags the mean. Returns the path, or None when nothing was logged.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend, Agg canvas by default

    done = _by_method([r for r in runs if r.complete], VAL_KEY, by)
    other = _by_method([r for r in runs if not r.complete], VAL_KEY, by)
    if not done and not other:
        return None
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, label in enumerate(method_order({*done, *other})):
        color = f"C{i % 10}"
        if label in done:
            grid, ys = _on_grid(done[label])
            for y in ys:
                ax.plot(grid, y, color=color, lw=0.6, alpha=0.35)
            mean, std = _column_stats(ys)
            n = len(ys)
            ax.plot(grid, mean, color=color, lw=2, label=f"{label} ({n} run{'s' * (n != 1)})")
            if n >= 2:
                ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        for j, (steps, values) in enumerate(other.get(label, [])):
            n = len(other[label])
            ax.plot(steps, values, color=color, lw=1, ls="--",
                    label=f"{label}: {n} run{'s' * (n != 1)} not complete" if j == 0 else None)  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("validation SI-SNRi (dB)")
    ax.set_title(
        "Validation SI-SNRi: mean over complete runs, ±1 std shaded\n"
        "thin lines: single seeds; dashed: runs not complete",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return path


def plot_telemetry(runs: Sequence[Run], path: Path, by: Sequence[str] = ()) -> Path | None:
    """PNG of GM telemetry per module (conflict fraction, cosine) over training, mean over seeds.

    Values are logged per training step and noisy, so each mean curve is a centred moving
    average over 1/25 of its points (stated on the plot). Only complete runs count, unless none
    is complete (e.g. while a study is still running): then every run does, as the title says.
    Returns None when nothing was logged.
    """
    from matplotlib.figure import Figure

    pool = [r for r in runs if r.complete]
    which = "complete runs"
    if not any(GM_COLUMN.match(k) for r in pool for k in r.history):
        pool, which = list(runs), "all runs (none complete)"
    runs = pool
    columns = sorted({k for r in runs for k in r.history if GM_COLUMN.match(k)})
    if not columns:
        return None
    modules = sorted({GM_COLUMN.match(c)["module"] for c in columns})
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    kinds = (
        ("conflict_frac", "fraction of tensors in conflict"),
        ("cosine", "mean cosine g_SE·g_SS"),
    )
    styles = ("-", "--", ":", "-.")
    labels = method_order({lab for c in columns for lab in _by_method(runs, c, by)})
    for ax, (kind, ylabel) in zip(axes, kinds):
        for j, module in enumerate(modules):
            curves = _by_method(runs, f"gm/{module}_{kind}", by)
            for i, label in enumerate(labels):
                if label not in curves:
                    continue
                grid, ys = _on_grid(curves[label])
                mean, _ = _column_stats(ys)
                k = max(1, grid.size // 25)
                ax.plot(
                    grid,
                    _smooth(mean, k),
                    color=f"C{i % 10}",
                    ls=styles[j % len(styles)],
                    label=f"{label} · {module} ({len(ys)} run{'s' * (len(ys) != 1)})",
                )
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[1].axhline(0.0, color="k", lw=0.6)
    fig.suptitle(
        f"GM telemetry per module: mean over seeds of {which}, moving average over 1/25 of the points"
    )
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The ``usgm-compare`` argument parser (the module docstring is its help text)."""
    p = argparse.ArgumentParser(
        prog="usgm-compare",
        description="Compare training runs by method from their local files (no W&B needed).",
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="a run folder, a Hydra multirun folder, or any folder above them",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("usgm_compare"),
        help="output folder (default: ./usgm_compare)",
    )
    p.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="KEY",
        help="also group by this dotted config key (e.g. data.n_src); repeatable",
    )
    p.add_argument(
        "--reference",
        default=REFERENCE,
        help=f"method the paired differences are taken against (default: {REFERENCE})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``usgm-compare``; returns 0, or 1 when no run was found."""
    args = build_parser().parse_args(argv)
    by: list[str] = args.by
    runs, notes = collect(args.run_dirs)
    for n in notes:
        print(f"usgm-compare: {n}", file=sys.stderr)
    if not runs:
        print("usgm-compare: error: no runs found", file=sys.stderr)
        return 1
    rows = summarize(runs, by, args.reference)
    warnings = consistency_notes(runs, by)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "summary.csv", out / "summary.md", out / "runs.csv"]
    write_summary_csv(rows, files[0], by)
    counts = {s: sum(r.status == s for r in runs) for s in ("complete", "incomplete", "failed")}
    status = ", ".join(f"{v} {k}" for k, v in counts.items())
    md = [
        "# usgm-compare",
        "",
        f"{len(runs)} runs ({status}). Mean ± std over seeds (n seeds); Δ: paired difference to "
        f"`{args.reference}` matched by seed, mean with 95 % Student-t interval over n pairs "
        "(none for n < 2). Only complete runs enter the statistics.",
        "",
        format_markdown(rows, by, args.reference),
        "",
        "## Runs",
        "",
        format_run_list(runs, markdown=True),
    ]
    if notes or warnings:
        md += ["", "## Notes", "", *(f"- {n}" for n in notes + warnings)]
    files[1].write_text("\n".join(md) + "\n")
    write_runs_csv(runs, files[2], by)
    for plot, name in ((plot_validation, "val_si_snri.png"), (plot_telemetry, "gm_telemetry.png")):
        written = plot(runs, out / name, by)
        if written:
            files.append(written)
        else:
            print(
                f"usgm-compare: no {name[:-4]} curves logged; {name} not written", file=sys.stderr
            )

    print(f"usgm-compare: {len(runs)} runs ({status})")
    print(format_text(rows, by, args.reference))
    print("\nruns:")
    print(format_run_list(runs))
    for n in warnings:
        print(f"note: {n}")
    print("\nwritten: " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
