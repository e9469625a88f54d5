"""The processes: the `chatops` command line, settings-driven start-up of every feature, the Bolt app, HTTP mode
(one server or several processes sharing a port), Socket Mode, the terminal chat, a private Redis, metrics."""
