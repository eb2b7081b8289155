"""ros/worker.py: the decision thread's bookkeeping under the interleavings a code review found
racy (issue 15, item 4), forced with events rather than sleeps.

The worker runs for real (its thread, mailbox and watchdogs); what it publishes goes to
RecordingIO, a stand-in for the node's publishers (ros/io.py needs a live node), and the
Guard is BlockingGuard, a stand-in whose decide() waits for the test's go-ahead, so a test
decides exactly which decision finishes when. The clocks are test clocks: no wall time.
"""
import threading
import time

import numpy as np
from sensor_msgs.msg import Image

from rs_guard_ros.config import Config
from rs_guard_ros.guard import Decision, abstain_decision
from rs_guard_ros.images import encode_raw
from rs_guard_ros.ros.gate_state import ACTIVE, FrameTime, OutputGate
from rs_guard_ros.ros.sync import CameraFrame
from rs_guard_ros.ros.worker import DecisionWorker, FrameJob, GateContext, Instruction

WAIT_S = 30.0  # progress only: how long to wait for a thread to get somewhere, never a timing claim


class RecordingIO:
    """Stand-in for GateIO: keeps every output and record instead of publishing it."""

    def __init__(self, cfg: Config):
        self.gate = OutputGate(cfg.commands.abstain)
        self.decisions, self.abstains = [], []
        self.published = threading.Condition()

    @property
    def current(self):
        return self.gate.current

    def decision(self, output, now, valid_from, quiet_after, record):
        with self.published:
            self.gate.on_decision(output, now, valid_from)
            self.decisions.append(record)
            self.published.notify_all()

    def abstain(self, source, reason, now, quiet_after, **extra):
        with self.published:
            self.gate.force_abstain(reason, now)
            self.abstains.append({"source": source, "reason": reason, **extra})
            self.published.notify_all()

    def wait(self, predicate) -> bool:
        """Until `predicate()` holds (polled: some of the worker's bookkeeping publishes nothing)."""
        end = time.monotonic() + WAIT_S
        while not predicate():
            if time.monotonic() > end:
                return False
            with self.published:
                self.published.wait(0.01)
        return True


class BlockingGuard:
    """Stand-in for Guard: decide() announces itself, then waits for the test to release it and
    returns a certified `forward` (or raises, when told to)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.entered = [threading.Event() for _ in range(8)]
        self.release = [threading.Event() for _ in range(8)]
        self.raise_on = set()
        self.calls = 0
        self.previous = []  # what each decision was offered to test first

    def decide(self, frame, instruction, deadline_s=None, clock=None, previous=None, state=None) -> Decision:
        call = self.calls
        self.calls += 1
        self.previous.append(previous)
        self.entered[call].set()
        assert self.release[call].wait(WAIT_S)
        if call in self.raise_on:
            raise RuntimeError("injected bookkeeping fault")
        return Decision(command="forward", certified=True, label="forward", radius=0.3, radius_camera=0.2,
                        p_lower=0.9, n_used=50, reason="certified", threshold=0.25)

    def abstain(self, reason: str) -> Decision:
        return abstain_decision(self.cfg, reason)


class Logger:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda text, **_: self.lines.append((level, text))


class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def frame_job(now: float) -> FrameJob:
    fields = encode_raw(np.full((24, 32, 3), 120, np.uint8))
    msg = Image(height=fields.height, width=fields.width, encoding=fields.encoding, step=fields.step)
    msg.data = fields.data
    return FrameJob({"camera": CameraFrame("camera", msg, FrameTime(now, "arrival"), now)}, time.monotonic())


def active_worker(deadline_s: float = 1.0):
    cfg = Config()
    cfg = type(cfg)(**{**cfg.__dict__, "node": type(cfg.node)(**{**cfg.node.__dict__,
                                                                   "decision_deadline": deadline_s})})
    clock, deadline_clock = Clock(), Clock()
    ctx = GateContext(cfg=cfg, io=RecordingIO(cfg), now=clock, logger=Logger(), deadline_now=deadline_clock)
    ctx.guard, ctx.phase, ctx.instruction = BlockingGuard(cfg), ACTIVE, Instruction("go to the red box", clock())
    return DecisionWorker(ctx), ctx, deadline_clock


def test_issue15_4_an_old_decision_thread_finishing_never_blinds_the_deadline_watchdog():
    """deactivate -> cleanup (stop without waiting) -> activate while decision 1 is still in
    the model; decision 2 starts; then decision 1 returns. The watchdog must still see decision
    2 overrun its deadline (the old code cleared "in flight" unconditionally)."""
    worker, ctx, deadline_clock = active_worker(deadline_s=1.0)
    guard = ctx.guard
    worker.start()
    worker.offer(frame_job(ctx.now()))
    assert guard.entered[0].wait(WAIT_S)
    with ctx.lock:
        worker.withdraw()  # deactivate: decision 1's result is void
    worker.stop()  # cleanup, without waiting for the model
    worker.start()  # configure + activate
    worker.offer(frame_job(ctx.now()))
    assert guard.entered[1].wait(WAIT_S)
    guard.release[0].set()  # decision 1 comes back now
    assert ctx.io.wait(lambda: ctx.stats.late_discarded == 1)  # ... and is discarded
    deadline_clock.t += 5.0  # decision 2 overruns its 1 s deadline
    worker.watch_deadline()
    assert [a["reason"] for a in ctx.io.abstains] == ["deadline: decision 2 still running after 5.000 s"]
    guard.release[1].set()
    assert ctx.io.wait(lambda: ctx.stats.late_discarded == 2)  # its late result never goes out
    assert ctx.io.decisions == [] and worker.stop(wait_s=WAIT_S)


def test_issue15_4_a_decision_that_raises_after_the_watchdog_leaves_one_abstain_and_no_bookkeeping():
    worker, ctx, deadline_clock = active_worker(deadline_s=1.0)
    guard = ctx.guard
    guard.raise_on.add(0)
    worker.start()
    worker.offer(frame_job(ctx.now()))
    assert guard.entered[0].wait(WAIT_S)
    deadline_clock.t += 2.0
    worker.watch_deadline()  # the frame's one output: the watchdog's abstain
    guard.release[0].set()  # then the model raises
    assert ctx.io.wait(lambda: any(level == "error" and "decision failed" in text for level, text in ctx.logger.lines))
    assert worker.stop(wait_s=WAIT_S)
    assert [a["source"] for a in ctx.io.abstains] == ["watchdog"] and ctx.stats.decisions == 1
    assert worker._cancelled == set() and worker._in_flight is None  # nothing left behind


def test_issue15_2_a_certified_decision_that_ended_past_its_deadline_is_published_as_abstain():
    """The worker's own check at publishing (independent of the Guard's and the watchdog's): the
    deadline clock passes the deadline while the model runs, the watchdog never looks."""
    worker, ctx, deadline_clock = active_worker(deadline_s=1.0)
    guard = ctx.guard
    worker.start()
    worker.offer(frame_job(ctx.now()))
    assert guard.entered[0].wait(WAIT_S)
    deadline_clock.t += 1.5
    guard.release[0].set()
    assert ctx.io.wait(lambda: ctx.io.decisions)
    record = ctx.io.decisions[0]
    assert (record["command"], record["certified"]) == ("stop", False)
    assert record["reason"] == "deadline: the decision took 1.500 s (decision_deadline 1 s)"
    assert not ctx.io.current.certified and worker.stop(wait_s=WAIT_S)


def test_issue15_1_a_certified_output_remembers_the_instruction_it_was_certified_for():
    worker, ctx, _ = active_worker()
    worker.start()
    worker.offer(frame_job(ctx.now()))
    ctx.guard.release[0].set()
    assert ctx.io.wait(lambda: ctx.io.decisions)
    assert ctx.io.current.certified and ctx.io.current.instruction == "go to the red box"
    assert ctx.io.gate.superseded_by("stop") and worker.stop(wait_s=WAIT_S)


def test_issue16_the_next_decision_is_offered_the_standing_command_for_its_instruction_only():
    """smoothing.selection "previous": the worker offers the command the gate is publishing --
    certified, for the same instruction, within its TTL -- and nothing otherwise."""
    worker, ctx, _ = active_worker()
    guard = ctx.guard
    worker.start()
    for call in range(4):
        guard.release[call].set()
    worker.offer(frame_job(ctx.now()))
    assert ctx.io.wait(lambda: len(ctx.io.decisions) == 1)
    worker.offer(frame_job(ctx.now()))  # forward is standing
    assert ctx.io.wait(lambda: len(ctx.io.decisions) == 2)
    with ctx.lock:
        ctx.instruction = Instruction("go to the blue ball", ctx.now())  # another instruction: not for it
    worker.offer(frame_job(ctx.now()))
    assert ctx.io.wait(lambda: len(ctx.io.decisions) == 3)
    ctx.now.t += ctx.cfg.node.command_ttl + 0.01  # the standing command's TTL is over
    worker.offer(frame_job(ctx.now()))
    assert ctx.io.wait(lambda: len(ctx.io.decisions) == 4)
    assert guard.previous == [None, "forward", None, None] and worker.stop(wait_s=WAIT_S)
