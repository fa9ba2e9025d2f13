"""inn_jax.train.preemption: a first SIGTERM or SIGINT asks the loop to stop after its step, a
second acts as without the handler; the previous handlers come back on exit. (The loop's stop,
save and resume: tests/test_reliability.py, and across processes tests/test_distributed.py.)"""

import os
import signal

import pytest

from inn_jax.train import preemption


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_first_signal_requests_a_stop_second_acts_as_before(sig, capsys):
  calls = []
  before = signal.signal(sig, lambda signum, frame: calls.append(signum))
  try:
    with preemption.StopRequests() as stop:
      assert stop.requested(1) is None
      os.kill(os.getpid(), sig)
      assert stop.requested(2) == sig.name and calls == []
      assert capsys.readouterr().err == (f"{sig.name}: finishing the current step, then saving; "
                                         "send it again to stop at once.\n")
      os.kill(os.getpid(), sig)  # Again: the handler from before this run.
      assert calls == [sig]
    os.kill(os.getpid(), sig)
    assert calls == [sig, sig]  # Restored on exit.
  finally:
    signal.signal(sig, before)


def test_ctrl_c_twice_interrupts():
  # Python's own SIGINT handler, as in a terminal: a test runner's worker (or an earlier test)
  # may have set another one.
  before = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with preemption.StopRequests() as stop:
      os.kill(os.getpid(), signal.SIGINT)
      assert stop.requested(1) == "SIGINT"
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, before)
