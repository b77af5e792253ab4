"""Set-up shared by every test module."""
import signal

# A test run started as a background job of a non-interactive shell (`python -m pytest &` in a
# script) inherits SIGINT ignored, and so would every program the tests start: the tests of Ctrl-C
# would wait for an interrupt that never comes. The session takes Ctrl-C back; the programs it starts
# then begin with the default disposition (exec resets a handler to the default, not an ignore).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


import pytest  # noqa: E402


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """This CPU as one without native bfloat16, whatever it is: --amp on the CPU is refused (as on AVX2 CPUs)."""
    import models.tracker

    def emulated(cpuinfo: str = "/proc/cpuinfo") -> dict:
        return {"native": False, "reason": "no avx512_bf16 or amx_bf16 (a test's stand-in CPU)"}

    monkeypatch.setattr(models.tracker, "cpu_bf16_support", emulated)
