"""Fixes from Slack: the reversible fixes the diagnosis offers, previewed, requested, approved (by a second
person where the policy says so), run once as a durable job, recorded, re-checked, and undoable.

    records.py   the durable state in Redis: previews, requests and their results
    guard.py     who may request and who may approve (the paging policy's `remediation:` and `remediate`)
    service.py   preview → request → approve/deny → the `remediation.apply` job → result, timeline, re-diagnosis
    messages.py  the preview dialog, the approval message and the result, as Block Kit
"""
