"""On call: schedules of the bot's own, so the right person is paged without a paging subscription.

    schedule.py   the ONCALL_FILE models (rotations, layers, restrictions), errors naming their path
    timeline.py   pure functions: on_call(schedule, instant, overrides) → Shift, shifts(schedule, start, end)
    overrides.py  overrides and swaps, durable in Redis
    changes.py    making them: parsing "4h" / "until 18:00" / ISO times, and who may
    service.py    the feature's context, whom a schedule pages now, handoff timers and their DMs, answers
    calendar.py   iCalendar export (GET /oncall/<schedule>.ics) and import (`ical:` in ONCALL_FILE)
    config.py     ONCALL_FILE, ONCALL_CALENDAR_TOKEN, ONCALL_CALENDAR_WEEKS
    install.py    wiring into a runtime

Nothing here does anything at import time.
"""
