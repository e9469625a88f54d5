"""Renderers: the same check results and verdicts presented as Slack blocks, terminal text or JSON."""
