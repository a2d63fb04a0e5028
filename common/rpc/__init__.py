"""Generated protobuf and gRPC stubs for ``proto/eventing.proto`` (``make proto`` regenerates them)."""
