//! Generated protobuf framing of the peer service (see proto/peer.proto).

tonic::include_proto!("berth.peer.v1");
