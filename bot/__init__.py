"""The ChatOps incident bot. Its rooms, top to bottom (each imports only what is below it; pyproject.toml's
import-linter contracts hold the order): app/ the processes; writeup/, incidents/, paging/ and diagnosis/ the
features; runtime.py what one process shares; slack/ and queue/ the I/O; settings, logs, errors, retry, durations
the shared base. The Slack listeners are in handlers/, the checks in checks/."""
