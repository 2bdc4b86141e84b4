"""Generated gRPC code for protos/eventrelay/v1/eventrelay.proto (`make protos`). Do not edit."""
