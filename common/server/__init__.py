"""The gRPC gateway server base: the Eventing servicer, supervision of sources, readiness, shutdown."""
