//! The agent orchestrator: agent lifecycle, the vm-agent link, output ingest and history
