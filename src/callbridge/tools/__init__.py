"""Tools for testing callbridge on one machine: small network helpers that tests and manual runs start."""
