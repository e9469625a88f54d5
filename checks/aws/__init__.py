"""AWS read-only checks. Every AWS action they use is listed in deploy/iam-policy.json."""
