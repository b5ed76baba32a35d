"""What operators watch: value history, drop alerts, and the value-over-time plot.

Pure numpy + Pillow (no ROS, no torch); the value node feeds it estimates and
publishes what it renders.
"""

from __future__ import annotations

import collections
import threading
import dataclasses

import numpy as np
from PIL import Image, ImageDraw


@dataclasses.dataclass(frozen=True)
class AlertConfig:
    """Alert when the value falls by more than ``drop`` within ``window_s`` seconds."""

    drop: float = 0.15
    window_s: float = 2.0

    def __post_init__(self):
        if not 0.0 < self.drop <= 1.0:
            raise ValueError(f"alert drop must be in (0, 1] (values are normalised to [-1, 0]), got {self.drop}")
        if not self.window_s > 0.0:
            raise ValueError(f"alert window must be > 0 s, got {self.window_s}")


class ValueHistory:
    """Recent (time, value) pairs and the drop alert over them.

    Thread-safe: the inference thread adds while the executor's timers plot and report.
    """

    def __init__(self, horizon_s: float = 20.0, alert: AlertConfig = AlertConfig()):
        if horizon_s <= 0:
            raise ValueError(f"history horizon must be > 0 s, got {horizon_s}")
        self.horizon_s = horizon_s
        self.alert_config = alert
        self._lock = threading.RLock()
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self.alerts = 0
        self._alerting = False

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()
            self._alerting = False

    def add(self, t: float, value: float) -> bool:
        """Record a value; True when this sample starts a new alert (a drop beyond the limit)."""
        if not np.isfinite(value):
            raise ValueError(f"value estimate is not finite: {value}")
        with self._lock:
            self._samples.append((t, float(value)))
            while self._samples and self._samples[0][0] < t - self.horizon_s:
                self._samples.popleft()
            dropping = self.drop_within_window() > self.alert_config.drop
            started = dropping and not self._alerting
            self._alerting = dropping
            self.alerts += int(started)
            return started

    @property
    def alerting(self) -> bool:
        return self._alerting

    def drop_within_window(self) -> float:
        """Largest fall from an earlier value to the latest one within the alert window."""
        with self._lock:
            if not self._samples:
                return 0.0
            t_now, v_now = self._samples[-1]
            highest = v_now
            for t, v in reversed(self._samples):  # newest first: only the window is visited
                if t < t_now - self.alert_config.window_s:
                    break
                highest = max(highest, v)
        return max(0.0, highest - v_now)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return np.zeros(0), np.zeros(0)
        t, v = zip(*samples)
        return np.asarray(t), np.asarray(v)


def render_plot(
    times: np.ndarray,
    values: np.ndarray,
    *,
    width: int = 480,
    height: int = 240,
    horizon_s: float = 20.0,
    alerting: bool = False,
    title: str = "value",
) -> np.ndarray:
    """Value over the last ``horizon_s`` seconds as an RGB image [height, width, 3] uint8.

    The y axis is the normalised value in [-1, 0] (0 = success now, -1 = the
    longest episode or a failure); the line turns red while an alert is active.
    """
    img = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 44, width - 8, 22, height - 20
    draw.rectangle([left, top, right, bottom], outline=(90, 90, 100))
    for v in (0.0, -0.25, -0.5, -0.75, -1.0):
        y = top + (bottom - top) * (-v)
        draw.line([left, y, right, y], fill=(50, 50, 58))
        draw.text((4, y - 6), f"{v:+.2f}", fill=(160, 160, 170))
    draw.text((left, 4), f"{title}  (last {horizon_s:.0f} s)", fill=(220, 220, 230))
    if len(values):
        t_end = float(times[-1])
        xs = right - (t_end - np.asarray(times)) / horizon_s * (right - left)
        ys = top + (bottom - top) * np.clip(-np.asarray(values), 0.0, 1.0)
        keep = xs >= left
        pts = list(zip(xs[keep].tolist(), ys[keep].tolist()))
        color = (235, 70, 60) if alerting else (80, 200, 120)
        if len(pts) >= 2:
            draw.line(pts, fill=color, width=2)
        elif pts:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=color)
        draw.text((right - 90, 4), f"now {values[-1]:+.3f}", fill=color)
    return np.asarray(img, dtype=np.uint8)
