"""Value history, drop alert and plot rendering, without ROS."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_value_node.monitor import AlertConfig, ValueHistory, render_plot


def test_alert_fires_once_on_a_fast_drop_and_rearms():
    h = ValueHistory(horizon_s=10, alert=AlertConfig(drop=0.2, window_s=1.0))
    fired = [h.add(t * 0.1, -0.2) for t in range(10)]
    assert not any(fired)
    assert h.add(1.0, -0.5)  # fell by 0.3 within 1 s
    assert h.alerting and not h.add(1.1, -0.5)  # same alert, not a new one
    for k in range(20):  # values settle: the window slides past the drop
        h.add(1.2 + 0.1 * k, -0.5)
    assert not h.alerting
    assert h.alerts == 1


def test_slow_decline_does_not_alert():
    h = ValueHistory(alert=AlertConfig(drop=0.2, window_s=1.0))
    assert not any(h.add(t * 0.1, -0.01 * t) for t in range(100))  # 0.01 per 0.1 s = 0.1 per s


def test_history_keeps_only_the_horizon():
    h = ValueHistory(horizon_s=2.0)
    for k in range(100):
        h.add(k * 0.1, -0.5)
    t, _ = h.arrays()
    assert t[0] >= t[-1] - 2.0 - 1e-9


def test_rejects_bad_config_and_values():
    with pytest.raises(ValueError):
        AlertConfig(drop=0.0)
    with pytest.raises(ValueError):
        ValueHistory().add(0.0, float("nan"))


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.floats(-1, 0), min_size=0, max_size=60), alerting=st.booleans())
def test_plot_has_the_requested_shape_and_draws_the_line(values, alerting):
    t = np.arange(len(values)) * 0.1
    img = render_plot(t, np.asarray(values), width=320, height=160, alerting=alerting)
    assert img.shape == (160, 320, 3) and img.dtype == np.uint8
    line = (235, 70, 60) if alerting else (80, 200, 120)
    has_line_colour = bool(np.any(np.all(img == line, axis=-1)))
    assert has_line_colour == (len(values) > 0)


def test_history_is_safe_to_read_while_the_inference_thread_adds():
    """The node's plot and status timers read the history while its inference thread adds to it."""
    import sys
    import threading

    h = ValueHistory(horizon_s=5000)  # 5,000 samples: a long iteration, as often interrupted
    for k in range(5000):
        h.add(float(k), -0.5)
    stop = threading.Event()
    errors = []

    def writer():
        k = 5000
        while not stop.is_set():
            h.add(float(k), -0.5)
            k += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: mid-iteration appends
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(100):
            try:
                t, v = h.arrays()
                h.drop_within_window()
            except RuntimeError as exc:  # "deque mutated during iteration"
                errors.append(exc)
                break
            assert len(t) == len(v)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert not errors, errors
