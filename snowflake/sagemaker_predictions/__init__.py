"""Predictions back in Snowflake: the PREDICTIONS table and the batch write-back job.

This package is a portion of the ``snowflake`` namespace package, beside Snowflake's own
``snowflake.connector``: there is deliberately no ``snowflake/__init__.py``.
"""
