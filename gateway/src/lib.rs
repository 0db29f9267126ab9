//! The gateway: REST, Socket.io and gRPC-web for phones and browsers
