"""Gateway kinds: one package per kind, each of the same shape. Gateways never import each other."""
