"""Choose DSBP's default ``threshold`` without reading the test split.

``python -m harness_plugins.dsbp_fp8.select_threshold [--workload mnist_vit] [--folds 5]``

Why cross-validation: the bound to meet is 0.5 accuracy points, and the workload's
500 validation images cannot resolve it (one image is 0.2 points; the paired
difference of two accuracies there has a standard error of ~0.8 points at the
disagreement rates DSBP produces). So the 4,000 non-test images (the run's train and
validation splits) are cut into ``folds`` stratified folds; for each fold a model is
trained with the workload's own recipe on the other folds and evaluated on the held-out
fold, in exact FP32 and through the FP8 DCIM at every candidate budget. The 4,000
out-of-fold predictions are pooled.

The rule: the cheapest candidate whose pooled accuracy drop against exact FP32 is at
most ``--max-drop`` (default 0.25 points: half the bound, the margin left for the test
split's own sampling error). Fixed widths (``--fixed``) are reported beside it, not
chosen from. The fold models are cached in ``<cache-dir>/dsbp_fp8_select``.
``--folds 0`` uses the run's model on its validation split instead (fast, coarse).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CANDIDATES = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6)


def _workload(name: str):
    from harness.host import get_host

    spec = get_host().spec("workload", name)
    return spec.factory(spec.config())


def run_subject(workload: str, seed: int, cache_dir: Path):
    """The run's trained model (from the shared model cache, or trained now)."""
    from harness.api import RunContext
    from harness.code_digest import source_digest

    return _workload(workload).build(RunContext(seed=seed, cache_dir=cache_dir))


def fold_indices(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each sample: stratified by label (each class dealt round-robin after
    a seeded shuffle), so every fold has the class mix of the whole."""
    fold_of = np.empty(len(y), dtype=np.int64)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        idx = idx[np.random.default_rng([seed, int(label), 17]).permutation(len(idx))]
        fold_of[idx] = np.arange(len(idx)) % folds
    return fold_of


def fold_subjects(workload: str, seed: int, folds: int, cache_dir: Path, progress=print):
    """``folds`` subjects, each trained on the other folds of train+val; its ``val`` is its held-out fold."""
    from harness.api import RunContext
    from harness.data import Splits, stratified_split
    from harness.nn.cache import cache_key, cached_state
    from harness.nn.subject import ModelSubject

    w = _workload(workload)
    ctx = RunContext(seed=seed, cache_dir=cache_dir)
    data = w.load_data(ctx.child_seed(w.name, "split"))
    x = np.concatenate([data.x_train, data.x_val])
    y = np.concatenate([data.y_train, data.y_val])
    fold_of = fold_indices(y, folds, seed)
    cfg = {k: v for k, v in vars(w.config).items() if k not in w.eval_only}
    out = []
    for f in range(folds):
        tr, ho = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        split = Splits(data.name, x[tr], y[tr], x[ho], y[ho], data.x_test[:0], data.y_test[:0], data.num_classes)
        model = w.make_model(np.random.default_rng([seed, f, 23]))
        subject = ModelSubject(w.name, model, split, w.train_config(), seed=int(seed * 1000 + f))

        def produce(subject=subject, f=f):
            progress(f"fold {f + 1}/{folds}: training on {len(tr)} images")
            subject.train(subject.train_config.epochs)
            return subject.model.state_dict(), {}

        key = cache_key(f"{w.name}_fold{f}of{folds}", cfg, seed, code=(source_digest(type(w)), source_digest(fold_subjects)))
        state, _, hit = cached_state(cache_dir, "dsbp_fp8_select", key, produce)
        if hit:
            model.load_state_dict(state)
        out.append(subject)
    return out


def measure(subjects, thresholds=CANDIDATES, fixed_bits=(), **accel) -> list[dict]:
    """One row per threshold (first: exact FP32), then per fixed ``B_x`` (``threshold``
    None; reported, not chosen from), pooled over the subjects' ``val`` splits."""
    from harness_plugins.dsbp_fp8 import DsbpFp8Backend, DsbpFp8Config

    labels = np.concatenate([s.data.y_val for s in subjects])
    exact = np.concatenate([s.logits(s.data.x_val).argmax(axis=1) for s in subjects])
    rows = [{"threshold": 0.0, "avg_input_bits": 32.0, "correct": int((exact == labels).sum()), "disagree": 0}]
    points = [(float(t), dict(mode="dsbp", threshold=float(t))) for t in thresholds]
    points += [(None, dict(mode="fixed", input_bits=int(b))) for b in fixed_bits]
    for t, point in points:
        backend = DsbpFp8Backend(DsbpFp8Config(compare_rows=0, **point, **accel))
        pred = np.concatenate([s.logits(s.data.x_val, backend).argmax(axis=1) for s in subjects])
        seen = backend.observe()
        rows.append({"threshold": t, "avg_input_bits": seen["numerics/avg_input_bits"],
                     "correct": int((pred == labels).sum()), "disagree": int((pred != exact).sum())})
    for r in rows:
        r["images"] = len(labels)
        r["drop_points"] = 100.0 * (rows[0]["correct"] - r["correct"]) / len(labels)
    return rows


def choose(rows: list[dict], max_drop: float) -> float | None:
    """The largest (cheapest) threshold whose pooled drop is within ``max_drop`` points."""
    within = [r["threshold"] for r in rows if r["threshold"] and r["drop_points"] <= max_drop]
    return max(within) if within else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="mnist_vit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds over train+val; 0: the run's val split")
    p.add_argument("--cache-dir", type=Path, default=Path(".harness_cache"))
    p.add_argument("--max-drop", type=float, default=0.25, help="accuracy points (default 0.25)")
    p.add_argument("--fixed", default="", help="also report fixed B_x widths, e.g. 5,6,7,8 (not chosen from)")
    ns = p.parse_args(argv)
    if ns.folds == 1 or ns.folds < 0:
        p.error(f"--folds {ns.folds}: use 0 (the validation split) or 2 or more")
    progress = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if ns.folds:
        subjects = fold_subjects(ns.workload, ns.seed, ns.folds, ns.cache_dir, progress)
        where = f"{ns.folds}-fold cross-validation over train+val"
    else:
        subjects = [run_subject(ns.workload, ns.seed, ns.cache_dir)]
        where = "the run's validation split"
    progress("evaluating the candidates")
    rows = measure(subjects, fixed_bits=[int(b) for b in ns.fixed.split(",") if b.strip()])
    print(f"{ns.workload} seed {ns.seed}: {rows[0]['images']} out-of-sample images, {where} (the test split is not read)")
    print(f"{'threshold':>10} {'avg B_x':>8} {'accuracy':>9} {'drop':>6} {'disagree':>9}")
    for r in rows:
        name = ("exact" if r["threshold"] == 0 else f"{r['threshold']:g}" if r["threshold"]
                else f"fixed {r['avg_input_bits']:.0f}")
        n = r["images"]
        print(f"{name:>10} {r['avg_input_bits']:8.2f} {100 * r['correct'] / n:8.2f}% {r['drop_points']:6.2f}"
              f" {100 * r['disagree'] / n:8.2f}%")
    chosen = choose(rows, ns.max_drop)
    if chosen is None:
        print(f"no candidate keeps the drop within {ns.max_drop:g} points", file=sys.stderr)
        return 1
    print(f"chosen: threshold={chosen:g} (the cheapest candidate within {ns.max_drop:g} points of drop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
