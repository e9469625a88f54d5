"""Runtime of the ChatOps incident bot: settings, Slack wiring, queue, worker, paging, postmortem."""
