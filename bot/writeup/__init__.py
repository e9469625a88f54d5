"""Write-up features: what happened, told back — timeline capture, back-fill, summaries and postmortem drafts.

    install.py     wiring into a Runtime (`install(rt)`); config.py the settings; context.py the `Writeup` context
    capture.py     Slack events → the incident's timeline (messages, key events, action items)
    backfill.py    reading channel history the live capture missed
    requests.py    asking for a back-fill or a postmortem (one enqueue each, coalesced per incident)
    summaries.py   thread summaries and incident catch-ups
    handoff.py     the open action items in an on-call handoff DM
    view.py        `IncidentView`: the read-only view of an incident record the write-ups use
    slacktext.py   Slack message text → plain text, mentions
    postmortem/    facts, Markdown from a Jinja2 template, publishing as a canvas, a file, S3
"""
