"""Serving replay: inference services driven by a request trace through the live autoscaler.

`rates` turns a GPU model and an LLM into a per-request service time, `requests` reads a
request trace, `replay` is the discrete-event simulation (virtual time) that drives
`broker.domain.autoscale.decide` the way `broker.serving.controller` does, and `figures`
accounts SLO, replica-hours, cost and kgCO2e. `docs/serving.md` states the model.
"""
