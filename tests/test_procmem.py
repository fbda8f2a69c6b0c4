"""nlpseq.utils.procmem: a child's peak memory, whole and anonymous, and its output."""
import sys

from nlpseq.utils.procmem import run_watched


def test_peak_memory_and_output_of_a_child():
    code = "import numpy as np, time, sys; a = np.ones(40_000_000); time.sleep(0.4); print('out'); print('err', file=sys.stderr)"
    w = run_watched([sys.executable, "-c", code])
    assert w.returncode == 0 and "out" in w.output and "err" in w.output
    assert w.peak_rss_mb >= 300  # 320 MB of ones
    assert w.peak_anon_mb is None or 300 <= w.peak_anon_mb <= w.peak_rss_mb + 1
    bad = run_watched([sys.executable, "-c", "raise SystemExit(3)"])
    assert bad.returncode == 3
