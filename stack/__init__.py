"""The outside systems behind small interfaces, and the one place that picks them.

``stack.resources.build_resources(config)`` returns the Snowflake connections, object
store, model registry and endpoint deployer for an environment.
"""
