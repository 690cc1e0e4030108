"""Inference services: the controller that scales each service's replicas and the load it reads."""
