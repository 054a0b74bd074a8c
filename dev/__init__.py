"""Development scripts run from a checkout on a GPU machine (dev/README.md); not shipped in the wheel."""
