"""A simulated site for the demo fleet and tests: clearly a simulator, same interface."""
