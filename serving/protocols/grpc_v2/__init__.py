"""The Open Inference Protocol's gRPC definition (``inference.proto``) and its generated code.

``inference_pb2`` (messages), ``inference_pb2_grpc`` (the service's servicer base and stub) and the
``.pyi`` stubs are generated from ``inference.proto`` by :mod:`.generate` (``make grpc-gen``) and
committed; they need the ``grpc`` extra (grpcio, protobuf) to import. The servicer is in
:mod:`modelfmt.serving.protocols.v2_grpc`.
"""
