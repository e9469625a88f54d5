"""Postmortem drafts: facts from the incident and its timeline (facts.py), Markdown from a replaceable Jinja2
template (assemble.py, templates/postmortem.md.j2), published as a canvas, a file and optionally to S3
(publish.py)."""
