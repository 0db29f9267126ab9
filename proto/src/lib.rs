//! CoVibe's gRPC contracts. Every crate uses `tonic` and `prost` through this crate so the
//! workspace shares one version of each.

pub mod limits;

pub use prost;
pub use tonic;

/// The encoded `FileDescriptorSet` of every CoVibe proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/covibe_descriptor.bin"));

pub mod common {
    pub mod v1 {
        tonic::include_proto!("covibe.common.v1");
    }
}

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("covibe.auth.v1");
    }
}

pub mod team {
    pub mod v1 {
        tonic::include_proto!("covibe.team.v1");
    }
}

pub mod orchestrator {
    pub mod v1 {
        tonic::include_proto!("covibe.orchestrator.v1");
    }
}

pub mod vmagent {
    pub mod v1 {
        tonic::include_proto!("covibe.vmagent.v1");
    }
}

pub mod vmconnector {
    pub mod v1 {
        tonic::include_proto!("covibe.vmconnector.v1");

        impl std::fmt::Debug for SshCredential {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let kind = |s: &str| if s.is_empty() { "none" } else { "<redacted>" };
                f.debug_struct("SshCredential")
                    .field("private_key", &kind(&self.private_key))
                    .field("passphrase", &kind(&self.passphrase))
                    .field("password", &kind(&self.password))
                    .finish()
            }
        }
    }
}

pub mod preview {
    pub mod v1 {
        tonic::include_proto!("covibe.preview.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("covibe.events.v1");
    }
}
