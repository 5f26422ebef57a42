"""Running Flower's processes: ports, process groups, the app package, certificates."""
