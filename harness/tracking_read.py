"""The tracker's read side: runs out of MLflow as plain data, for dashboards and claims.

:mod:`harness.tracking` writes records; this module is the only other one that
talks to MLflow, and it only reads (plus files a rendered report with a run, the
one write a report needs). It turns MLflow's entities into :class:`RunView`s, so
selection, claims and rendering are plain Python that tests feed without a store.

Reads are batched: runs come in pages of 1,000 (``search_runs``' maximum) and
metric series for many runs in one query per key where the store offers it (the
SQL stores' bulk history read; other stores fall back to one call per run).
``progress`` callbacks report each page, so a large store shows it is moving.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from harness.tracking import _quiet_mlflow, resolve_tracking_uri

__all__ = ["RunView", "StoreReader"]

Progress = Callable[[str], None]


@dataclass
class RunView:
    """One run as plain data (latest value of each metric)."""

    run_id: str
    name: str
    experiment: str
    status: str
    start_ms: int = 0
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


class StoreReader:
    """Reads runs from one tracking URI (any store MLflow's client can open)."""

    PAGE = 1000

    def __init__(self, tracking_uri: str | None = None):
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)

    # -- experiments and sweeps ------------------------------------------------
    def experiment_ids(self, names: Sequence[str]) -> dict[str, str]:
        """``{id: name}`` of the named experiments; raises naming the ones that exist."""
        found, missing = {}, []
        for name in names:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                missing.append(name)
            else:
                found[exp.experiment_id] = name
        if missing:
            known = sorted(e.name for e in self.client.search_experiments(max_results=1000))
            raise LookupError(
                f"no experiment {', '.join(map(repr, missing))} at {self.tracking_uri}; "
                f"experiments there: {', '.join(known) or 'none'}"
            )
        return found

    def experiments(self) -> dict[str, str]:
        """``{id: name}`` of every active experiment in the store."""
        return {e.experiment_id: e.name for e in self.client.search_experiments(max_results=1000)}

    def sweep_parent(self, experiment_ids: Sequence[str], sweep_id: str | None = None) -> RunView | None:
        """The parent run of sweep ``sweep_id`` (a prefix is enough), or of the latest sweep."""
        flt = "tags.`harness.sweep_parent` = 'true'"
        runs = self.client.search_runs(
            list(experiment_ids), filter_string=flt, order_by=["attributes.start_time DESC"], max_results=1000
        )
        for run in runs:
            if sweep_id is None or run.data.tags.get("harness.sweep_id", "").startswith(sweep_id):
                return self._view(run, {})
        return None

    def sweep_run_ids(self, parent: RunView) -> set[str]:
        """Runs a sweep's summary lists: its children and the jobs it skipped as finished earlier."""
        try:
            with tempfile.TemporaryDirectory(prefix="harness-dash-") as tmp:
                path = self.client.download_artifacts(parent.run_id, "sweep_summary.json", tmp)
                rows = json.loads(open(path).read())
        except Exception:  # a sweep still running, or from before summaries existed
            return set()
        return {r["run_id"] for r in rows if r.get("run_id")}

    # -- runs ------------------------------------------------------------------
    def search(
        self,
        experiment_ids: dict[str, str],
        filter_string: str = "",
        run_ids: Iterable[str] = (),
        progress: Progress | None = None,
    ) -> list[RunView]:
        """Every run matching ``filter_string`` (pages of 1,000), plus ``run_ids``."""
        out: dict[str, RunView] = {}
        token, page_no = None, 0
        while True:
            page = self.client.search_runs(
                list(experiment_ids), filter_string=filter_string, max_results=self.PAGE, page_token=token
            )
            page_no += 1
            for run in page:
                out[run.info.run_id] = self._view(run, experiment_ids)
            if progress:
                progress(f"reading runs: {len(out)} (page {page_no})")
            token = page.token
            if not token:
                break
        extra = [r for r in run_ids if r not in out]
        for run_id in extra:
            try:
                run = self.client.get_run(run_id)
            except Exception:  # deleted since the summary was written
                continue
            out[run_id] = self._view(run, experiment_ids)
        return list(out.values())

    @staticmethod
    def _view(run, experiment_ids: dict[str, str]) -> RunView:
        tags = dict(run.data.tags)
        return RunView(
            run_id=run.info.run_id,
            name=run.info.run_name or tags.get("mlflow.runName", run.info.run_id[:8]),
            experiment=experiment_ids.get(run.info.experiment_id, run.info.experiment_id),
            status=run.info.status,
            start_ms=run.info.start_time or 0,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags=tags,
        )

    def histories(
        self, run_ids: Sequence[str], key: str, progress: Progress | None = None
    ) -> dict[str, list[tuple[int, float]]]:
        """``{run_id: [(step, value), ...]}`` of metric ``key`` for many runs at once."""
        out: dict[str, list[tuple[int, float]]] = {r: [] for r in run_ids}
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        bulk = getattr(store, "get_metric_history_bulk", None)  # SQL stores: one query per chunk
        ids = list(run_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = None
            if bulk is not None:
                try:
                    rows = [(m.run_id, m) for m in bulk(chunk, key, max_results=10**9)]
                except Exception:
                    rows = None
            if rows is None:
                rows = [(r, m) for r in chunk for m in self.client.get_metric_history(r, key)]
            for run_id, metric in rows:
                out[run_id].append((int(metric.step), float(metric.value)))
            if progress:
                progress(f"reading {key}: {min(start + 500, len(ids))}/{len(ids)} runs")
        for points in out.values():
            points.sort()
        return out

    # -- the one write: a report filed with a run -------------------------------
    def log_report(self, run_id: str, folder: str | os.PathLike, artifact_path: str = "dashboard") -> None:
        """Attach every file under ``folder`` to run ``run_id`` under ``artifact_path``."""
        self.client.log_artifacts(run_id, str(folder), artifact_path)
