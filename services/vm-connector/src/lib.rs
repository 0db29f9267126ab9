//! The vm-connector: members' VMs and how vm-agents get started on them
