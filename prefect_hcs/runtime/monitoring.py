"""What a plate run shows in the Prefect UI: flow-run tags, artifacts and `prefect-hcs.*` events.

Everything here runs in the flow process (never in a task or a Dask worker) and is best effort:
a monitoring call that fails logs a warning and the plate goes on. Task runs are deliberately
not tagged: every tagged task run makes a tag-concurrency API call (~2 s on SQLite under load),
so plate, well and step travel in task-run *names* and on the *flow run's* tags instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from prefect_hcs.pipeline.plan import PlatePlan
from prefect_hcs.runtime import artifacts, thumbnails
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime.objects import objects_summary
from prefect_hcs.runtime.results import WellStepRun
from prefect_hcs.runtime.ui_events import (
    artifact_key,
    best_effort,
    browsable,
    emit,
    omero_link,
    plate_id_from_url,
    short_reason,
    tag_flow_run,
)

#: Budget for the thumbnails artifact (characters of markdown): large plates get smaller images.
THUMBNAIL_BUDGET = 600_000
#: At most this many `prefect-hcs.well.failed` events per run (a broken plate is one event).
MAX_WELL_EVENTS = 100


class PlateMonitor:
    """The UI side of one plate run: tags, progress, artifacts and events, from the flow.

    The flow calls `start` once the plan is compiled, reports wells as chunks finish, then
    `completed` or `failed`. All calls are cheap (a few API calls per chunk, not per image).
    """

    def __init__(self, plate_url: str, min_update_seconds: float = 1.0) -> None:
        self.plate_url = str(plate_url)
        self.plate_id = plate_id_from_url(self.plate_url)
        self.plan: PlatePlan | None = None
        self.status: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.details: dict[str, str] = {}
        self.min_update_seconds = min_update_seconds
        self._progress_id: Any = None
        self._last_update = 0.0
        self._well_events = 0
        self._published = False
        self._opts: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self, plan: PlatePlan, storage_options: dict[str, Any]) -> None:
        """Tag the run and publish the plan and the progress artifact once the plan is compiled.

        Tables and thumbnails are read back from the output, so the output's storage options
        are kept (``storage_options`` are the plate's).
        """
        self.plan, self.plate_id, self._opts = plan, plan.plate_id, plan.output.storage_options
        tag_flow_run(f"plate:{plan.plate_id}", f"pipeline:{plan.pipeline_name}")
        self._publish_plan()
        self._create_progress()
        emit(
            "plate.started",
            self.plate_id,
            self.plate_url,
            {
                "reason": "",
                "wells": self.counts(),
                "pipeline": plan.pipeline_name,
                "plan_fingerprint": plan.fingerprint,
            },
        )

    def completed(self, summary: dict[str, Any]) -> None:
        """Publish the final artifacts and emit ``plate.completed`` with the run's summary."""
        self.publish_results(summary.get("tables"))
        emit(
            "plate.completed",
            self.plate_id,
            self.plate_url,
            {
                "reason": "",
                "wells": self.counts(),
                "seconds": summary.get("seconds"),
                "output": browsable(str(summary.get("output", ""))),
            },
        )

    def failed(self, exc: BaseException) -> None:
        """Publish what is known and emit ``plate.failed`` naming the failed wells and the error."""
        if self.plan is None:
            tag_flow_run(f"plate:{self.plate_id}")
        else:
            self.publish_results(None)
        failed = sorted(w for w, s in self.status.items() if s == "failed")
        emit(
            "plate.failed",
            self.plate_id,
            self.plate_url,
            {
                "reason": short_reason(f"{type(exc).__name__}: {exc}"),
                "wells": self.counts(),
                "failed_wells": failed[:MAX_WELL_EVENTS],
            },
        )

    # ------------------------------------------------------------------ wells
    def wells_skipped(self, wells: list[str]) -> None:
        """Count wells that a resumed run found complete (they are not run again)."""
        for w in wells:
            self.status[w] = "skipped"
        self._update_progress()

    def step_results(self, results: Sequence[WellStepRun]) -> None:
        """Add each well's step time to its total."""
        for r in results:
            self.seconds[r.well] = self.seconds.get(r.well, 0.0) + r.seconds

    def wells_done(self, wells: list[str]) -> None:
        """Count wells whose last step completed; updates the progress artifact."""
        for w in wells:
            self.status[w] = "completed"
        self._update_progress()

    def well_failed(self, well: str, step: str, reason: str) -> None:
        """Record a failed well and emit a per-well event (at most `MAX_WELL_EVENTS` per run)."""
        self.status[well] = "failed"
        self.details[well] = short_reason(f"step {step!r}: {reason}", 300)
        if self._well_events < MAX_WELL_EVENTS:
            self._well_events += 1
            emit(
                "well.failed",
                self.plate_id,
                self.plate_url,
                {
                    "well": well,
                    "step": step,
                    "reason": short_reason(reason),
                    "wells": self.counts(),
                },
            )
        self._update_progress()

    def counts(self) -> dict[str, int]:
        """Wells by state (total, completed, failed, skipped) for progress and summaries."""
        values = list(self.status.values())
        return {
            "total": len(self.plan.wells) if self.plan else 0,
            "completed": values.count("completed"),
            "failed": values.count("failed"),
            "skipped": values.count("skipped"),
        }

    # ------------------------------------------------------------------ artifacts
    @best_effort
    def _publish_plan(self) -> None:
        plan = self.plan
        assert plan is not None
        create_table_artifact(
            artifacts.plan_rows(plan),
            key=artifact_key("plan", plan.plate_id),
            description=f"Compiled plan of {plan.plate_id}: steps, backends, outputs",
        )
        create_table_artifact(
            artifacts.config_rows(plan),
            key=artifact_key("plan-config", plan.plate_id),
            description="Resolved settings and the layer each came from (step/pipeline/global/default)",
        )

    @best_effort
    def _create_progress(self) -> None:
        self._progress_id = create_progress_artifact(
            0.0,
            key=artifact_key("progress", self.plate_id),
            description=self._progress_text(),
        )
        self._last_update = time.monotonic()

    @best_effort
    def _update_progress(self, force: bool = False) -> None:
        if self._progress_id is None or self.plan is None:
            return
        now = time.monotonic()
        c = self.counts()
        finished = c["completed"] + c["failed"] + c["skipped"]
        if (
            not force
            and finished < c["total"]
            and now - self._last_update < self.min_update_seconds
        ):
            return
        self._last_update = now
        update_progress_artifact(
            self._progress_id,
            100.0 * finished / max(1, c["total"]),
            description=self._progress_text(),
        )

    def _progress_text(self) -> str:
        c = self.counts()
        done = c["completed"] + c["failed"] + c["skipped"]
        return (
            f"{done}/{c['total']} wells finished: {c['completed']} completed, "
            f"{c['failed']} failed, {c['skipped']} skipped (resumed)"
        )

    def publish_results(self, tables: dict[str, str] | None) -> None:
        """Final progress, per-well summary, thumbnails and output links (once per run)."""
        if self._published or self.plan is None:
            return
        self._published = True
        self._update_progress(force=True)
        self._publish_summary(tables)
        self._publish_thumbnails()
        self._publish_links(tables)

    @best_effort
    def _publish_summary(self, tables: dict[str, str] | None) -> None:
        plan = self.plan
        assert plan is not None
        rows = artifacts.summary_rows(
            plan.wells, self.status, self.seconds, self._nuclei(tables), self.details
        )
        for row, extra in zip(rows, objects_summary(plan, tables, self._opts), strict=True):
            row.update(extra)
        c = self.counts()
        create_table_artifact(
            rows,
            key=artifact_key("wells", plan.plate_id),
            description=(
                f"Per-well summary of {plan.plate_id}: {c['completed']} completed, "
                f"{c['failed']} failed, {c['skipped']} skipped of {c['total']}"
            ),
        )

    def _nuclei(self, tables: dict[str, str] | None) -> dict[str, int]:
        """Nuclei per well: the plate table if finalized, else each finished well's own table."""
        plan = self.plan
        assert plan is not None
        wanted = [tuple(k.split(".", 1)) for k in plan.output.tables if k.endswith(".measurements")]
        if tables:
            urls = [tables[f"{s}.{n}"] for s, n in wanted if f"{s}.{n}" in tables]
        else:
            done = {w for w, s in self.status.items() if s in ("completed", "skipped")}
            urls = [
                p.special_outputs[n]
                for p in plan.step_plans
                for s, n in wanted
                if p.well in done and p.step_name == s and n in p.special_outputs
            ]
        counts: dict[str, int] = {}
        for url in urls:
            try:
                rows = hio.csv_to_rows(hio.read_bytes(url, self._opts))
            except (OSError, ValueError):
                continue
            for well, n in artifacts.nuclei_from_rows(rows).items():
                counts[well] = counts.get(well, 0) + n
        return counts

    @best_effort
    def _publish_thumbnails(self) -> None:
        plan = self.plan
        assert plan is not None
        pngs: dict[str, bytes] = {}
        for w in plan.wells:
            if self.status.get(w) not in ("completed", "skipped"):
                continue
            try:
                pngs[w] = hio.read_bytes(
                    thumbnails.thumbnail_url(plan.output.done_dir(w), w), self._opts
                )
            except (OSError, ValueError):
                continue
        create_markdown_artifact(
            artifacts.thumbnails_markdown(plan.plate_id, pngs, THUMBNAIL_BUDGET),
            key=artifact_key("thumbnails", plan.plate_id),
            description=f"Final image of each well of {plan.plate_id} (small previews)",
        )

    @best_effort
    def _publish_links(self, tables: dict[str, str] | None) -> None:
        plan = self.plan
        assert plan is not None
        out = plan.output
        target = out.zarr_url or out.root
        listed = "; ".join(f"{k}: {browsable(v)}" for k, v in sorted((tables or {}).items()))
        create_link_artifact(
            browsable(target),
            link_text=f"{plan.plate_id} outputs ({'OME-Zarr plate' if out.zarr_url else out.image_backend})",
            key=artifact_key("output", plan.plate_id),
            description=f"Output of {plan.plate_id}" + (f". Tables: {listed}" if listed else ""),
        )
        if plan.plate_url.startswith("omero://") or out.root_backend == "omero":
            create_link_artifact(
                omero_link(plan.plate_url),
                link_text=f"{plan.plate_id} in OMERO (outputs are FileAnnotations on plate/wells)",
                key=artifact_key("omero", plan.plate_id),
                description=(
                    "OMERO plate. Set PREFECT_HCS_OMERO_WEB_URL to link OMERO.web instead of "
                    "the omero:// address."
                ),
            )
