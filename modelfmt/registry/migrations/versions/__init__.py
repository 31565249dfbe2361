"""The registry schema revisions, oldest first."""
