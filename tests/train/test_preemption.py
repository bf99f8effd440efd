"""`train.preemption.StopRequest`: the first SIGINT / SIGTERM asks to stop after the current step, a second Ctrl-C
aborts at once, the previous handlers come back, and several jax processes agree on the step to stop at."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.train.kill_resume import REPO, cpu_env
from zoomiqa_jax.train.preemption import StopRequest


def _raise(signum: int) -> None:
    os.kill(os.getpid(), signum)  # the handler runs before os.kill returns to the next bytecode


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_only_asks_to_stop(signum: int) -> None:
    logged: list[str] = []
    with StopRequest(log=logged.append) as stop:
        assert not stop.requested and not stop.agreed() and stop.signal_name == ""
        _raise(signum)
        assert stop.requested and stop.agreed()
        assert stop.signal_name == signal.Signals(signum).name
    assert len(logged) == 1 and "finishing the current step" in logged[0]


def test_second_ctrl_c_aborts_at_once() -> None:
    with StopRequest(log=lambda _: None) as stop:
        _raise(signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            _raise(signal.SIGINT)
        assert stop.signal_name == "SIGTERM"  # the first signal still names the stop
    with StopRequest(log=lambda _: None), pytest.raises(KeyboardInterrupt):
        _raise(signal.SIGINT)
        _raise(signal.SIGINT)


def test_repeated_sigterm_keeps_stopping_cleanly() -> None:
    logged: list[str] = []
    with StopRequest(log=logged.append) as stop:
        _raise(signal.SIGTERM)
        _raise(signal.SIGTERM)  # no exception: the checkpoint must still be written
        assert stop.agreed()
    assert "again" in logged[1]


def test_previous_handlers_are_restored() -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: calls.append(s))
    try:
        with StopRequest(log=lambda _: None):
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        _raise(signal.SIGTERM)
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


WORKER = """
import os, signal, sys, time
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid = int(sys.argv[2])
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=pid)
from zoomiqa_jax.train.preemption import StopRequest
with StopRequest(log=lambda _: None) as stop:
    for step in range(40):
        if stop.agreed():
            print(f"STOP {step} {stop.signal_name}", flush=True)
            break
        if pid == 1 and step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # only process 1 is signalled, in the middle of its step 3
        time.sleep(0.02 if pid == 0 else 0.0)
    else:
        print("NO STOP", flush=True)
jax.distributed.shutdown()
"""


def test_two_processes_agree_on_the_stop_step() -> None:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = cpu_env()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, f"localhost:{port}", str(i)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=120)
        finally:
            p.kill()
        assert p.returncode == 0, err[-2000:]
        outs.append(out.strip().splitlines()[-1])
    # process 0 got no signal, process 1 got it during step 3: both stop before step 4, naming SIGTERM
    assert outs == ["STOP 4 SIGTERM", "STOP 4 SIGTERM"]


def test_sigterm_raises_interrupt_inside_the_block_only() -> None:
    from zoomiqa_jax.train.preemption import sigterm_raises_interrupt

    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), sigterm_raises_interrupt():
        try:
            _raise(signal.SIGTERM)
        finally:
            cleaned.append(True)
    assert cleaned == [True] and signal.getsignal(signal.SIGTERM) is before
