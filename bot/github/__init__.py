"""The GitHub client: the App's installation clients, retries, TLS, and App registration."""
