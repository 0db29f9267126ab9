//! Which vm-agent links this replica holds, and delivery of control commands to them. Commands
//! are published on the hot store's control channel so that whichever replica holds the link
//! (any of them may) passes the command on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use covibe_proto::events::v1::control_message::Message as Control;
use covibe_proto::events::v1::{AgentCommand, ControlMessage};
use covibe_proto::prost::Message;
use covibe_proto::tonic::Status;
use covibe_proto::vmagent::v1::server_frame::Frame as Out;
use covibe_proto::vmagent::v1::{Command, ServerFrame};
use covibe_storage::{FanoutEvent, Subscription};
use covibe_types::AgentId;
use tokio::sync::mpsc;

pub(crate) type FrameTx = mpsc::Sender<Result<ServerFrame, Status>>;

#[derive(Default)]
pub struct Links {
    held: Mutex<HashMap<AgentId, FrameTx>>,
}

impl Links {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, FrameTx>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the link; a newer link for the same agent replaces an older one.
    pub(crate) fn attach(&self, id: AgentId, tx: FrameTx) {
        self.held().insert(id, tx);
    }

    pub(crate) fn detach(&self, id: AgentId, tx: &FrameTx) {
        let mut held = self.held();
        if held
            .get(&id)
            .is_some_and(|current| current.same_channel(tx))
        {
            held.remove(&id);
        }
    }

    /// Sends the command down the agent's link if this replica holds it.
    pub(crate) async fn deliver(&self, id: AgentId, command: Command) -> bool {
        let tx = self.held().get(&id).cloned();
        match tx {
            Some(tx) => tx
                .send(Ok(ServerFrame {
                    frame: Some(Out::Command(command)),
                }))
                .await
                .is_ok(),
            None => false,
        }
    }

    /// Delivers every command published on the control channel to the links held here.
    pub(crate) fn listen(self: &Arc<Self>, mut commands: Subscription) {
        let links = self.clone();
        tokio::spawn(async move {
            while let Some(event) = commands.recv().await {
                let FanoutEvent::Message(bytes) = event else {
                    tracing::warn!("control channel gap: commands sent meanwhile may be lost");
                    continue;
                };
                let Ok(message) = ControlMessage::decode(bytes) else {
                    tracing::warn!("undecodable control message dropped");
                    continue;
                };
                // Messages for other services (the vm-connector's) share the channel.
                let Some(Control::Agent(AgentCommand {
                    agent_id,
                    command: Some(command),
                })) = message.message
                else {
                    continue;
                };
                let Ok(id) = agent_id.parse::<AgentId>() else {
                    continue;
                };
                if links.deliver(id, command).await {
                    tracing::info!(agent_id = %id, "command passed to the vm-agent");
                }
            }
        });
    }
}
