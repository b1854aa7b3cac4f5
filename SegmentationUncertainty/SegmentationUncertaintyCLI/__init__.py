"""Command-line tools on the compute core (``gpssi``; ``fuse``), and the file reading/writing they share."""
