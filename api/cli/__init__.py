"""The imaging-api command."""
