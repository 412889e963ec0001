"""The `eap` command line."""
