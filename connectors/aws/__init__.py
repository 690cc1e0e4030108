"""AWS EC2 sites: GPU capacity provisioned as tagged instances that join a Kubernetes cluster.

`connector.AwsConnector` is the entry point. `settings` documents the `connector:` block,
`catalog` the prices and offers, `mapping` and `faults` the translation of EC2 shapes and
errors, `client` the EC2/STS calls, `session` the credential sources, `checks` what
`broker check` verifies. Nothing here imports boto3 or botocore at import time.
"""
