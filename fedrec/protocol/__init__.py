"""What travels between server and clients: message keys and the checks on arrays."""
