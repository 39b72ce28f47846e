//! What became of each outgoing message, told to Laravel in the messages lane: the outcome is
//! handed to the batch queue (waiting for room in its mailbox), and the record is marked
//! reported once the outbox write that holds it is done. A record finished but not yet marked
//! (wasup died in between) is reported again when the dispatcher loads it, or when the batch
//! queue was restarted ([`ReportOutcomesAgain`]): at least once.

use actix::prelude::*;

use super::{MessageDispatcher, MessageState};
use crate::{
    batch::FlushOutbox,
    messages::{Direction, MessageReceived, OutboundItem, OutgoingOutcome, OutgoingState, Payload},
    supervision::CoreAddr,
};

/// The batch queue was restarted: what it held in memory is gone, so every finished outcome
/// not yet marked reported is reported again.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct ReportOutcomesAgain;

impl Handler<ReportOutcomesAgain> for MessageDispatcher {
    type Result = ();

    fn handle(&mut self, _: ReportOutcomesAgain, ctx: &mut Context<Self>) {
        let unreported: Vec<String> = self
            .records
            .iter()
            .filter(|(_, record)| !record.outcome_reported && outcome_state(record.state).is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for message_id in unreported {
            self.report_outcome(&message_id, ctx);
        }
    }
}

/// Longest failure reason sent to Laravel with an outcome.
const MAX_OUTCOME_ERROR_CHARS: usize = 500;

/// The outcome Laravel hears for a finished message (`None` while it is not finished).
fn outcome_state(state: MessageState) -> Option<OutgoingState> {
    match state {
        MessageState::Sent => Some(OutgoingState::Sent),
        MessageState::Failed => Some(OutgoingState::Failed),
        MessageState::Queued | MessageState::Sending | MessageState::Retrying => None,
    }
}

impl MessageDispatcher {
    /// Hands a finished message's outcome to the batch queue; marks it reported (and saves the
    /// mark) once the outbox holds it.
    pub(super) fn report_outcome(&mut self, message_id: &str, ctx: &mut Context<Self>) {
        let Some(record) = self.records.get(message_id) else {
            return;
        };
        // One incarnation for the item and the flush that confirms it (see `CoreAddr::current`).
        let batch = self.outcomes.as_ref().map(CoreAddr::current);
        let (Some(batch), Some(state)) = (batch, outcome_state(record.state)) else {
            return;
        };
        let to = if record.to.contains('@') {
            record.to.clone()
        } else {
            format!("{}@s.whatsapp.net", record.to)
        };
        let outcome = OutgoingOutcome {
            direction: Direction::Outgoing,
            message_id: record.message_id.clone(),
            state,
            whatsapp_id: record.whatsapp_id.clone(),
            to,
            error: (state == OutgoingState::Failed)
                .then(|| record.last_error.clone())
                .flatten()
                .map(|error| error.chars().take(MAX_OUTCOME_ERROR_CHARS).collect()),
        };
        let item = MessageReceived {
            item: OutboundItem {
                session_id: record.session_id.clone(),
                payload: Payload::Outgoing(outcome),
                user_id: None,
                timestamp: record.updated_at,
            },
        };
        let message_id = message_id.to_string();
        async move {
            batch.send(item).await?;
            batch.send(FlushOutbox).await.map(|written| written.is_ok())
        }
        .into_actor(self)
        .map(move |written, actor, ctx| {
            if written == Ok(true)
                && let Some(record) = actor.records.get_mut(&message_id)
            {
                record.outcome_reported = true;
                actor.save(&message_id, ctx);
            }
        })
        .spawn(ctx);
    }
}
