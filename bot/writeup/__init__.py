"""Write-up features: timeline capture, back-fill, postmortem drafts and summaries (issue #5).

`bot.writeup.install.install(rt)` wires them into a runtime; settings live in `bot.writeup.config`.
"""
