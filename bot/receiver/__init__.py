"""The receiver: the webhook endpoint, payload decoding, and ingest (recording deliveries and
carrying out the handlers' decisions); the redelivery sweep."""
