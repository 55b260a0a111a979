"""What a platform answers about a fleet's events (``datafactory expect`` computes the right
answers): readings per device per 5 minutes, alerts raised per site per day, devices going
offline and online per site per day."""

from __future__ import annotations

from datafactory.expect.questions import Measure, Question

QUESTIONS = (
    Question(
        "readings_by_device_5min",
        "telemetry",
        300,
        by=("device_id", "metric"),
        measures=(
            Measure("readings", "count"),
            Measure("mean", "mean", "value"),
            Measure("min", "min", "value"),
            Measure("max", "max", "value"),
        ),
        doc="Readings and their mean, least and greatest value per device per 5 minutes "
        "(by measurement time: event_time; a buffered reading arrives at its sent_at).",
        arrival="sent_at",
    ),
    Question(
        "alerts_by_site_day",
        "alert",
        86400,
        by=("site_id",),
        measures=(Measure("alerts", "count"),),
        where=(("alert_type", ("alert_raised",)),),
        doc="Alerts raised per site per day.",
    ),
    Question(
        "status_changes_by_site_day",
        "device_status",
        86400,
        by=("site_id", "event_type"),
        measures=(Measure("changes", "count"),),
        doc="Devices going offline and coming back online per site per day.",
    ),
    Question(
        "downtime_by_device_day",
        "device_status",
        86400,
        by=("device_id",),
        measures=(
            Measure("outages", "count", "last_heartbeat_at"),
            Measure("downtime_s", "sum", "event_time", since="last_heartbeat_at"),
        ),
        where=(("event_type", ("device_online",)),),
        doc="Outages that ended per device per day, and their downtime in seconds: from the "
        "last heartbeat before the device went silent to its coming back online (a "
        "registration, with no heartbeat before it, is no outage).",
    ),
)
