"""Identity: tenants, users and their credentials (provisioning, local logins)."""
