"""Action items become tickets in the team's tracker (GitHub Issues or Jira Cloud), once; their state comes back
into `/incident summary`, the postmortem and `/incident followups`. Settings: config.py; the job: export.py."""
