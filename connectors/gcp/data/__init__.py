"""The shipped GCP price catalog and the script that rebuilds it (see README.md)."""
