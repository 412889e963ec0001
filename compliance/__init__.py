"""Policy code: classification, PII, export control, audit, GDPR, retention."""
