"""Stopping a training run on SIGINT / SIGTERM without losing work (Ctrl-C, spot / preemptible VMs).

    with StopRequest(log=print) as stop:
        while step < total:
            if stop.agreed():          # every process calls it at the same point of every step
                save_checkpoint(step)  # data position and sampler state included
                break
            step = train_step(step)

The first SIGINT or SIGTERM only sets a flag: the step in progress finishes, the loop saves a checkpoint at the
next step boundary and returns; `zoomiqa train` then exits 0 with the command that resumes the run. A second
SIGINT (Ctrl-C pressed again) raises KeyboardInterrupt at once. A repeated SIGTERM is logged and otherwise ignored
(launchers that forward SIGTERM to the whole process group may deliver it twice; the save must still happen).

Several processes (a TPU pod, a GPU cluster): a signal may reach the hosts at different steps, or only one of them
(Ctrl-C in one terminal). `agreed()` gathers every process's flag (one int32 per process, through
`jax.experimental.multihost_utils.process_allgather`) so all processes stop after the same step and save the same
checkpoint together. jax's own `reached_preemption_sync_point` would only see SIGTERM delivered through the
coordination service, not Ctrl-C; the gather sees both and costs one tiny collective per step.

Jobs without steps to finish (`zoomiqa eval`, `zoomiqa-convert`) use `sigterm_raises_interrupt()`: SIGTERM then
raises KeyboardInterrupt as Ctrl-C does, so their cleanup (temporary directories, open files) runs on both.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

import numpy as np

DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Installs SIGINT / SIGTERM handlers on `__enter__` and restores the previous ones on `__exit__` (module
    docstring). Outside the main thread (where Python cannot install handlers) it installs nothing and never
    asks to stop."""

    def __init__(self, signals: Sequence[int] = DEFAULT_SIGNALS, log: Callable[[str], None] | None = None) -> None:
        self.signals = tuple(signals)
        self.log = log or (lambda msg: print(msg, flush=True))
        self.signum: int | None = None  # the first signal received here, or agreed on with the other processes
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------------------------------ handlers
    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            self.log(f"{name} received: finishing the current step, then saving a checkpoint "
                     "(press Ctrl-C again to abort at once, losing the steps since the last checkpoint)")
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt(f"second signal ({name}): aborted without saving")
        self.log(f"{name} received again: already stopping after the current step")

    # ------------------------------------------------------------------------------------------ queries
    @property
    def requested(self) -> bool:
        """Whether this process received a stop signal (local; no communication)."""
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        """"SIGINT", "SIGTERM", ... ("" before any signal)."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def agreed(self) -> bool:
        """Whether any process has received a stop signal. With several jax processes this is a collective: every
        process must call it at the same point of the same step, and all get the same answer (and the same
        `signum`: the lowest process's signal)."""
        import jax

        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = np.asarray(multihost_utils.process_allgather(np.int32(self.signum or 0))).reshape(-1)
        raised = flags[flags != 0]
        if not len(raised):
            return False
        self.signum = int(raised[0])
        return True


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def sigterm_raises_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt (as SIGINT does), so `finally` / `except BaseException`
    cleanup runs instead of the process dying where it stands; the previous handler is restored after. Outside
    the main thread it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
