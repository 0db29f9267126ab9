//! vm-agent: runs an agent command on a member's VM and streams its output to the orchestrator
