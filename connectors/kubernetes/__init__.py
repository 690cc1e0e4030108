"""The Kubernetes connector: a private cluster with NVIDIA GPUs, driven through the official
`kubernetes` client (imported lazily, only here).

Modules: `settings` (the site's `connector:` mapping), `client` (one ApiClient per cluster,
calls and the watch), `errors` (client errors → connector errors), `catalog` (GPU product
labels → model names), `labels` (names read and written), `inventory` (nodes and pods →
pools), `manifest` (the Job), `status` (Job → job state), `follow` (list+watch → updates),
`connector` (the `Connector`).
"""
