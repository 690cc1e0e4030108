"""Google Cloud (Compute Engine) sites: GPU capacity the broker provisions and releases.

`connector.GcpConnector` is the entry point (registered for `SiteKind.GCP`). The modules:
`settings` (the site's `connector:` mapping), `catalog` (GPU machine shapes and prices),
`mapping` (instances and labels to and from the domain), `faults` (provider errors to
connector errors), `client` (the SDK clients, off the loop, retried) and `checks`.
google.cloud.compute is imported only when a client is first needed.
"""
