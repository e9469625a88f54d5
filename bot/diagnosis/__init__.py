"""A diagnosis run: `/diagnose api` becomes check jobs on the queue, one live summary message with each result in
its thread, and a verdict (`run`); renderers present the checks' data for Slack and the terminal (`render`)."""
