"""Slack I/O: the one Web API client wrapper (`client`), post-once (`posts`), mrkdwn escaping and Block Kit limits
(`mrkdwn`), and the local Slack Web API emulator that the terminal chat and the tests run against (`local`)."""
