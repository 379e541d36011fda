"""Dataset readers and the bundled demo data."""
