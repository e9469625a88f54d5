"""Alert sources beyond Alertmanager: CloudWatch alarms through SNS, Grafana, Datadog and a generic signed
webhook. Each source turns its payload into an `AlertNotice` (bot/incidents/notice.py) that the incident
intake (bot/incidents/alerts.py) opens, annotates and resolves incidents from.

    sources.py     the table: route, configured?, authenticate, parse — and the route built from a row
    sns.py         SNS envelope: topic allow-list, signature v1/v2, subscription confirmation
    sns_fetch.py   HTTPS fetches from SNS hosts only: signing certificates (chain checked, cached), SubscribeURL
    cloudwatch.py  metric / composite alarms and EventBridge alarm state changes → notice
    grafana.py     Grafana Alerting webhook contact point (basic auth or HMAC)
    datadog.py     Datadog webhook with the documented template (shared-secret header)
    generic.py     POST /hooks/generic (HMAC of "<timestamp>.<body>", 5-minute window)
    rules.py       severity and service: ALERT_RULES first, then what the source says
    episodes.py    when each firing began, for sources that do not repeat it (CloudWatch OK, generic)
    config.py      settings (SNS_*, GRAFANA_*, DATADOG_*, GENERIC_WEBHOOK_SECRET, ALERT_RULES)
    service.py     `Alerts`, the context every source works with
    install.py     `install(rt)`: the routes, the closer, the secrets
"""
