"""The decision thread: a one-deep mailbox of camera frames, the freshness rules, the call
to `Guard.decide`, and publishing each decision -- plus the two watchdogs (stale inputs
on the node clock, a decision past its deadline on the deadline clock).

Freshness. A frame's time is its header stamp where set, else its arrival at the node.
Before the model runs, and again when the result is published, the frame must be at most
node.max_frame_age old and its stamp at most node.max_stamp_lead ahead of the node clock,
and the instruction must be present and fresh; otherwise the decision abstains with the
reason. A certified command is valid until its frame's time + node.command_ttl. Ages are
measured on the node clock, which follows /clock under use_sim_time.

Deadline. node.decision_deadline counts on `GateContext.deadline_now`: simulation time
under use_sim_time (a slow computer slows the simulated world, not the gate's verdicts),
else the steady clock (immune to wall-clock jumps). It is passed to `Guard.decide`, which
checks it before every model batch and after the certificate; the worker checks it again
at publishing, and the deadline watchdog abstains while a decision overruns. A late
certificate is never published.

Records. Each decision publishes one JSON record: the Decision (its `settings` are the
ones the decision actually ran under) and the ROS side -- frame stamp and arrival, the
frame time used and its source, the frame's age at publishing, a bounded summary of the
instruction, latencies.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import Config
from .gate_state import (ACTIVE, MALFORMED_IMAGE, SUPERSEDED, UNCONFIGURED, AbstainWarnings, GateStats, LatestSlot,
                         Output, bounded, instruction_fields, instruction_reason, reason_kind, ttl_reason)
from .sync import CameraFrame, JointSample, ViewRounds, arrivals_reason, state_fields, state_vector, views_reason
from ..images import ImageError
from .io import GateIO, decode, stamp_s


@dataclass
class FrameJob:
    """The newest frame of every camera, waiting for (or in) a decision."""

    views: dict[str, CameraFrame]  # camera name -> its newest frame when the decision was asked for
    received_mono: float  # arrival of the frame that completed the round, time.monotonic(), for latency
    job_id: int = 0

    @property
    def primary(self) -> CameraFrame:
        """The first camera's frame: the one the record's frame fields describe."""
        return next(iter(self.views.values()))

    def oldest(self, now: float) -> float:
        """The earliest capture time of the views (a command's TTL counts from it), at most `now`."""
        return min(min(v.frame.t for v in self.views.values()), now)


@dataclass(frozen=True)
class Instruction:
    """The latest instruction and when it arrived (node clock, s)."""

    text: str
    received: float


@dataclass
class GateContext:
    """What the executor thread (subscriptions, timers, parameter and lifecycle services)
    and the decision thread share. Read and write every field under `lock`."""

    cfg: Config
    io: GateIO
    now: Callable[[], float]  # the node clock, s
    logger: Any
    deadline_now: Callable[[], float] = time.monotonic  # the clock node.decision_deadline counts on, s
    stats: GateStats = field(default_factory=lambda: GateStats(time.monotonic()))
    warnings: AbstainWarnings = field(default_factory=AbstainWarnings)
    lock: threading.RLock = field(default_factory=threading.RLock)
    phase: str = UNCONFIGURED
    guard: Any = None  # rs_guard_ros.guard.Guard once loaded (torch is imported then)
    instruction: Instruction | None = None
    rounds: ViewRounds | None = None  # every camera's newest frame (set by the node for its cameras)
    joint_state: JointSample | None = None  # the newest joint state (state.topic)
    first_decisions: Any = None  # doctor.FirstDecisions: the start-up check on camera frames, until it is logged

    def abstain(self, source: str, reason: str, now: float, **extra: Any) -> None:
        """Publish the abstain action now, with a record (see GateIO.abstain)."""
        self.io.abstain(source, reason, now, self.cfg.node.abstain_publish_timeout, **extra)


class DecisionWorker:
    """Decides on the newest frame, one at a time, in its own thread, so /clock,
    parameters and timers never wait for the model."""

    def __init__(self, ctx: GateContext):
        self._ctx = ctx
        self._slot: LatestSlot[FrameJob] = LatestSlot()
        self._thread: threading.Thread | None = None
        self._job_ids = itertools.count(1)
        self._in_flight: tuple[int, float] | None = None  # (job id, start on ctx.deadline_now)
        self._cancelled: set[int] = set()
        self._stale_cause: str | None = None  # the input watchdog's active cause, if any

    @property
    def dropped(self) -> int:
        """Frames replaced in the mailbox before a decision took them."""
        return self._slot.dropped

    # -- the thread ---------------------------------------------------------------------

    def start(self) -> None:
        """A fresh mailbox and the decision thread that empties it."""
        self._slot = LatestSlot()
        self._thread = threading.Thread(target=self._work, args=(self._slot,), name="rs_guard_decide", daemon=True)
        self._thread.start()

    def stop(self, wait_s: float = 0.0) -> bool:
        """Release the decision thread, waiting up to `wait_s` for a decision in flight; False
        if it is still running (a hung model is left to finish on its own)."""
        self._slot.close()
        thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout=wait_s)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        """Whether a decision thread has been started and not stopped."""
        return self._thread is not None

    def offer(self, job: FrameJob) -> None:
        """Hand a frame to the decision thread; an untaken older one is dropped (and counted)."""
        self._slot.put(job)

    def withdraw(self) -> None:
        """Leaving ACTIVE (caller holds the lock): forget the pending frame and discard the
        result of the decision in flight."""
        self._slot.clear()
        if self._in_flight is not None:
            self._cancelled.add(self._in_flight[0])

    def _work(self, slot: LatestSlot[FrameJob]) -> None:
        """Decide on the newest frame until the slot closes; never dies."""
        while (job := slot.take()) is not None:
            try:
                self._decide(job)
            except Exception as exc:  # a bug here must not stop gating: abstain and go on
                reason = bounded(f"error: {type(exc).__name__}: {exc}")
                self._ctx.logger.error(f"decision failed: {reason}")
                with self._ctx.lock:
                    cancelled = self._finish(job.job_id)  # the watchdog already gave this frame its abstain
                    if self._ctx.phase == ACTIVE and not cancelled:
                        self._ctx.abstain("watchdog", reason, self._ctx.now(), decision_id=job.job_id)
                        self._ctx.stats.record(time.monotonic(), False, reason)

    def _finish(self, job_id: int) -> bool:
        """Forget decision `job_id`'s bookkeeping (caller holds the lock): it is no longer in
        flight, if it was the one in flight; True if it had been cancelled, so its result must
        be discarded. Keyed by id: a finishing thread never clears another decision's entry."""
        if self._in_flight is not None and self._in_flight[0] == job_id:
            self._in_flight = None
        if job_id in self._cancelled:
            self._cancelled.discard(job_id)
            return True
        return False

    # -- one decision -------------------------------------------------------------------

    def _decide(self, job: FrameJob) -> None:
        """Decode, refuse stale inputs (the model is not run for them), run Guard.decide with
        the deadline, publish."""
        ctx = self._ctx
        with ctx.lock:
            guard = ctx.guard
            if ctx.phase != ACTIVE or guard is None:
                return
            job.job_id = next(self._job_ids)
            started = ctx.deadline_now()
            self._in_flight = (job.job_id, started)
        t0 = time.monotonic()
        instruction, state, vector = None, None, None
        frames, why = _decode_views(job)
        if why:
            decision = guard.abstain(why)
        else:
            with ctx.lock:
                cfg, instruction, state, now = ctx.cfg, ctx.instruction, ctx.joint_state, ctx.now()
                vector, why = _state_for(now, state, cfg, "deciding")
                why = _input_reason(now, job, instruction, cfg, "deciding") or why
                previous = None if why else ctx.io.gate.standing(instruction.text, now, cfg.node.command_ttl)
            deadline = cfg.node.decision_deadline
            decision = (guard.abstain(why) if why else
                        guard.decide(frames, instruction.text, deadline_s=deadline if deadline > 0 else None,
                                     clock=ctx.deadline_now, previous=previous, state=vector))
        self._publish(job, decision, instruction, (time.monotonic() - t0) * 1e3, started, state, vector)

    def _publish(self, job: FrameJob, decision: Any, instruction: Instruction | None, work_ms: float,
                 started: float, state: JointSample | None = None, vector: Any = None) -> None:
        """Publish a decision unless it was cancelled; a certified one must still be within its
        deadline (counted from `started`), its frames and joint state fresh, and its instruction
        still current, else it becomes an abstain with the reason."""
        ctx = self._ctx
        with ctx.lock:
            if self._finish(job.job_id):
                ctx.stats.late_discarded += 1
                return
            if ctx.phase != ACTIVE:
                return
            now, cfg = ctx.now(), ctx.cfg
            if decision.certified:
                why = (late_reason(ctx.deadline_now() - started, cfg.node.decision_deadline)
                       or _publish_reason(now, job, instruction, ctx.instruction, cfg)
                       or _state_for(now, state, cfg, "publishing")[1])
                if why:
                    decision = decision.refused(why, cfg.commands.abstain)
            total_ms = (time.monotonic() - job.received_mono) * 1e3
            record = decision.to_dict()
            # timing_ms (from the Guard) breaks "decide" down; latency_ms is frame arrival -> publish.
            record.update(_ros_fields(job, instruction, now), **state_fields(state, vector), source="decision",
                          dropped_frames=self.dropped,
                          latency_ms={"queue": max(0.0, total_ms - work_ms), "decode_and_decide": work_ms,
                                      "total": total_ms})
            output = Output(decision.command, decision.certified, decision.reason,
                            instruction.text if decision.certified else None)
            ctx.io.decision(output, now, job.oldest(now), cfg.node.abstain_publish_timeout, record)
            ctx.stats.record(time.monotonic(), decision.certified, decision.reason, total_ms)
            warning = None if decision.certified else ctx.warnings.note(decision.reason, time.monotonic())
            # the start-up check times on the node clock (sim time under use_sim_time), as the bounds count
            checked = ctx.first_decisions and ctx.first_decisions.note(
                decision.n_used, now - max(v.received for v in job.views.values()), now - job.oldest(now))
            if checked:  # logged once; later decisions pay nothing for it
                ctx.first_decisions = None
        if warning:
            (ctx.logger.error if reason_kind(decision.reason) == "fault" else ctx.logger.warning)(warning)
        if checked:
            within, line = checked
            (ctx.logger.info if within else ctx.logger.warning)(line)

    # -- watchdogs ----------------------------------------------------------------------

    def watch_inputs(self) -> None:
        """A camera with no message for node.max_frame_age (each camera on its own), or a
        missing or expired instruction -> abstain now (once per cause), on the node clock."""
        ctx = self._ctx
        with ctx.lock:
            if ctx.phase != ACTIVE or ctx.rounds is None:
                return
            now, n, arrivals = ctx.now(), ctx.cfg.node, ctx.rounds.arrivals()
            instruction = ctx.instruction.received if ctx.instruction else None
            stale = arrivals_reason(now, arrivals, ctx.rounds.cameras, n.max_frame_age)
            why = stale[0] if stale else instruction_reason(now, instruction, n.max_instruction_age)
            cause = stale[1] if stale else why.split(":", 1)[0] if why else None
            if cause is not None and cause != self._stale_cause:
                frame = min(arrivals.values(), default=None)
                ctx.abstain("watchdog", why, now, frame_received=frame, instruction_received=instruction,
                            frame_age=None if frame is None else now - frame,
                            instruction_age=None if instruction is None else now - instruction)
                ctx.stats.event(why)
                ctx.logger.warning(f"abstain: {why}")
            self._stale_cause = cause

    def reset_watch(self) -> None:
        """Forget the input watchdog's cause (on activation: gating starts afresh)."""
        self._stale_cause = None

    def watch_deadline(self) -> None:
        """A decision still running past node.decision_deadline (on the deadline clock) ->
        abstain now; its late result will be discarded."""
        ctx = self._ctx
        with ctx.lock:
            deadline = ctx.cfg.node.decision_deadline
            if ctx.phase != ACTIVE or self._in_flight is None or deadline <= 0:
                return
            job_id, started = self._in_flight
            elapsed = ctx.deadline_now() - started
            if elapsed <= deadline or job_id in self._cancelled:
                return
            self._cancelled.add(job_id)
            reason = f"deadline: decision {job_id} still running after {elapsed:.3f} s"
            ctx.abstain("watchdog", reason, ctx.now(), in_flight_s=elapsed, decision_id=job_id)
            ctx.stats.record(time.monotonic(), False, reason, elapsed * 1e3)  # this frame's one output
        ctx.logger.error(f"abstain: {reason} (decision_deadline {deadline:g} s)")


def late_reason(elapsed: float, deadline: float) -> str | None:
    """Why a decision that took `elapsed` s (on the deadline clock) is too late to publish under
    node.decision_deadline (0 = none), or None: a late certificate is never published."""
    if deadline > 0.0 and elapsed > deadline:
        return f"deadline: the decision took {elapsed:.3f} s (decision_deadline {deadline:g} s)"
    return None


def _decode_views(job: FrameJob) -> tuple[dict[str, Any], str | None]:
    """Every view's RGB frame, or the reason (malformed_image, naming the camera when there are
    several) a message cannot be decoded."""
    frames = {}
    for name, view in job.views.items():
        try:
            frames[name] = decode(view.msg)
        except ImageError as exc:
            where = f"{name}: " if len(job.views) > 1 else ""
            return frames, bounded(f"{MALFORMED_IMAGE}: {where}{exc}")
    return frames, None


def _state_for(now: float, state: JointSample | None, cfg: Config, moment: str) -> tuple[Any, str | None]:
    """(joint-state vector, None) when state.topic is read and fresh, (None, reason) when it
    cannot be used, (None, None) when no state is read."""
    st = cfg.state
    return state_vector(now, state, st.joint_names, st.max_age, moment) if st.topic else (None, None)


def _input_reason(now: float, job: FrameJob, instruction: Instruction | None, cfg: Config,
                  moment: str) -> str | None:
    """Why the frames and instruction cannot be acted on at `now`: a view missing, too old,
    stamped in the future or skewed; the instruction missing or expired; None when all fresh."""
    n = cfg.node
    return (views_reason(now, job.views, cfg.cameras.names, n.max_frame_age, n.max_stamp_lead, n.max_camera_skew,
                         moment)
            or instruction_reason(now, instruction.received if instruction else None, n.max_instruction_age))


def _publish_reason(now: float, job: FrameJob, decided: Instruction | None, current: Instruction | None,
                    cfg: Config) -> str | None:
    """Why a certified decision must not be published at `now`: its inputs are no longer
    fresh, its command would already have expired, or the instruction changed meanwhile."""
    why = (_input_reason(now, job, current, cfg, "publishing")
           or ttl_reason(now, job.oldest(now), cfg.node.command_ttl))
    if why is None and (decided is None or current.text != decided.text):
        why = f"{SUPERSEDED}: the instruction changed during the decision"
    return why


def _ros_fields(job: FrameJob, instruction: Instruction | None, now: float) -> dict[str, Any]:
    """The ROS side of a decision record: when (node clock), which frame and how old it was at
    publishing (the first camera's; with several cameras each one's under "cameras"), which
    instruction (bounded: a prefix, its length and hash)."""
    first = job.primary
    fields = {"time": now, **_frame_fields(first, now), **instruction_fields(instruction.text if instruction else None),
              "instruction_received": instruction.received if instruction else None, "decision_id": job.job_id}
    if len(job.views) > 1:
        fields["cameras"] = {name: _frame_fields(view, now) for name, view in job.views.items()}
    return fields


def _frame_fields(view: CameraFrame, now: float) -> dict[str, Any]:
    msg = view.msg
    return {"stamp": stamp_s(msg), "frame_id": bounded(msg.header.frame_id), "frame_received": view.received,
            "frame_time": view.frame.t, "frame_time_source": view.frame.source, "frame_age": now - view.frame.t}


__all__ = ["DecisionWorker", "GateContext", "FrameJob", "Instruction"]
