//! Where a session's conversations go: its pusher link when there is a pusher, the
//! outbox otherwise — and the outbox too when the link's queue is full. One type
//! answers "is there a pusher?", and one event source tells the session what was
//! handed off.

use std::sync::Arc;

use hark_proto::{ConversationRecord, Via};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fallback::Fallback;
use crate::metrics::{CONVERSATIONS, PUSHER_DROPPED_BYTES, PUSHER_DROPPED_FRAMES};
use crate::pusher::audio::AudioEncoder;
use crate::pusher::link::{LinkCommand, LinkEvent, PusherLink};
use crate::Shared;

/// Commands queued to the pusher link before audio is dropped.
const LINK_QUEUE: usize = 128;

/// The session's pusher link, while it has one.
struct Link {
    /// Commands to the link task.
    commands: mpsc::Sender<LinkCommand>,
    /// Its events; ends when the link task has handed everything off.
    events: mpsc::Receiver<LinkEvent>,
}

/// A session's hand-off paths.
pub struct Handoff {
    /// `None` without `--pusher-url`, and once the link has finished.
    link: Option<Link>,
    /// Outbox writes made by the session itself; each yields the conversation id
    /// once the record is durable (`None`: the outbox refused it, and logged it).
    writes: JoinSet<Option<String>>,
    /// The fallback path.
    fallback: Arc<Fallback>,
    /// Builds the 101s, so that only finished frames cross to the link's task.
    audio: AudioEncoder,
    /// Finished 101s on their way to the link (at most two; kept, not reallocated).
    ready: Vec<bytes::Bytes>,
}

impl Handoff {
    /// Starts the session's pusher link (if there is a pusher) on the process's
    /// tracked tasks.
    pub fn start(shared: &Shared, uid: &str, sample_rate: u32, session_id: Arc<str>) -> Self {
        let link = shared.pusher.as_ref().map(|pusher| {
            let (commands, rx) = mpsc::channel(LINK_QUEUE);
            let (events_tx, events) = mpsc::channel(64);
            let link = PusherLink::new(pusher.clone(), uid, sample_rate, session_id, rx, events_tx);
            shared.tasks.spawn(link.run());
            Link { commands, events }
        });
        Self {
            link,
            writes: JoinSet::new(),
            fallback: shared.fallback.clone(),
            audio: AudioEncoder::new(sample_rate),
            ready: Vec::with_capacity(2),
        }
    }

    /// Sends a command the link may drop (audio, live segments): `false` when the
    /// link could not take it (the caller counts the drop). Without a pusher
    /// nothing is sent and nothing is dropped.
    pub fn offer(&self, command: LinkCommand) -> bool {
        match &self.link {
            Some(link) => link.commands.try_send(command).is_ok(),
            None => true,
        }
    }

    /// Adds PCM16 whose first sample is at `start` (Unix seconds) to the 101 being
    /// built, and offers each finished 101 to the link. Without a pusher, nothing.
    pub fn audio(&mut self, start: f64, pcm: &[u8]) {
        if self.link.is_some() {
            self.audio.push(start, pcm, &mut self.ready);
            self.send_ready();
        }
    }

    /// The conversation changed (103): the 101 being built ends first, so every
    /// 101 pusher gets belongs to the conversation it was told of before it.
    pub fn conversation_started(&mut self, id: String) {
        self.flush_audio();
        self.offer(LinkCommand::ConversationStarted(id));
    }

    /// Whether the session has a pusher link to feed.
    pub fn has_link(&self) -> bool {
        self.link.is_some()
    }

    /// Sends the 101 being built now, however short: at a conversation change, at
    /// the end, and on the session's 1 s tick, so pusher gets the tail of a burst
    /// (or the audio before a pause) within a second, as it did when the link
    /// built 101s.
    pub fn flush_audio(&mut self) {
        if self.link.is_some() {
            self.audio.flush(&mut self.ready);
            self.send_ready();
        }
    }

    /// Offers the finished 101s; one the link cannot take is dropped and counted
    /// (the link cannot keep up, or pusher is slow): never queue more.
    fn send_ready(&mut self) {
        for frame in self.ready.drain(..) {
            let len = frame.len() as u64;
            let taken = match &self.link {
                Some(link) => link.commands.try_send(LinkCommand::Audio(frame)).is_ok(),
                None => true,
            };
            if !taken {
                metrics::counter!(PUSHER_DROPPED_BYTES, "frame" => "101").increment(len);
                metrics::counter!(PUSHER_DROPPED_FRAMES, "frame" => "101").increment(1);
            }
        }
    }

    /// A conversation ended: to the link, or — without one, or when its queue is
    /// full, which must not lose a conversation — to the outbox from here.
    pub fn conversation_ended(&mut self, record: ConversationRecord) {
        self.flush_audio();
        let record = match &self.link {
            Some(link) => {
                match link.commands.try_send(LinkCommand::ConversationEnded(Box::new(record))) {
                    Ok(()) => return,
                    Err(refused) => match refused.into_inner() {
                        LinkCommand::ConversationEnded(record) => *record,
                        _ => unreachable!("the command sent is the one returned"),
                    },
                }
            }
            None => record,
        };
        let fallback = self.fallback.clone();
        self.writes.spawn(async move {
            fallback.write(&record).await.ok().map(|_| {
                metrics::counter!(CONVERSATIONS, "via" => "fallback").increment(1);
                record.conversation_id
            })
        });
    }

    /// The next hand-off event. Pending while there is none; cancel-safe.
    pub async fn next_event(&mut self) -> LinkEvent {
        loop {
            let link = async {
                match self.link.as_mut() {
                    Some(link) => link.events.recv().await,
                    None => std::future::pending().await,
                }
            };
            let written = async {
                if self.writes.is_empty() {
                    std::future::pending().await
                } else {
                    self.writes.join_next().await
                }
            };
            tokio::select! {
                event = link => match event {
                    Some(event) => return event,
                    // The link finished: nothing more will come from it.
                    None => self.link = None,
                },
                written = written => {
                    if let Some(Ok(Some(conversation_id))) = written {
                        return LinkEvent::HandedOff { conversation_id, via: Via::Fallback };
                    }
                }
            }
        }
    }

    /// Ends the hand-offs: the link is told the deadline and its queue closed; then
    /// every event until the link and the session's own writes are done, or until
    /// `deadline`.
    pub async fn finish(&mut self, deadline: Instant) -> Vec<LinkEvent> {
        let mut events = Vec::new();
        self.flush_audio();
        if let Some(Link { commands, events: from_link }) = self.link.take() {
            let finish = LinkCommand::Finish { deadline };
            let _ = tokio::time::timeout_at(deadline, commands.send(finish)).await;
            // Dropping the sender is what ends the link's loop; its events then end
            // once it has handed everything off.
            drop(commands);
            let mut from_link = from_link;
            while let Ok(Some(event)) = tokio::time::timeout_at(deadline, from_link.recv()).await {
                events.push(event);
            }
        }
        while !self.writes.is_empty() {
            match tokio::time::timeout_at(deadline, self.next_event()).await {
                Ok(event) => events.push(event),
                Err(_) => break,
            }
        }
        events
    }
}
