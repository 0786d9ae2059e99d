"""The pipeline: its definition, the local runner, the resources it uses and the CLI.

The only package that imports the SageMaker SDK, and only when a definition is built.
"""
