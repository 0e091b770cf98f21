"""Validation of the transformed data before anything is sent: failures go to ops.error_log."""
