"""Google Cloud checks: Cloud Run, Cloud SQL, Cloud Storage, load-balancer backends and Cloud CDN, Cloud Logging."""
