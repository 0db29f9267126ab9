//! The covibe command: standalone mode and every service as a subcommand
