"""Everything the gateways share: the gRPC server base, the client, settings, errors, retry, logging.

Layer 2 of three (``proto`` stubs -> ``common`` -> ``gateways``): nothing here imports a gateway
or a broker client library.
"""
