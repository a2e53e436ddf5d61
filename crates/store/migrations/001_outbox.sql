-- The shared outbox of the fallback path (design.md §6a, "Shared fallback").
-- One row per conversation, keyed by its id: a repeat insert is a no-op for as
-- long as the row exists, delivered or not. A delivered row is a tombstone: its
-- record is dropped and its id kept until pruned (7 days by default).
CREATE TABLE hark_outbox (
    conversation_id text        PRIMARY KEY,
    uid             text        NOT NULL,
    -- The ConversationRecord as JSON; NULL once delivered.
    record          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Due from then on (a failed delivery moves it later).
    available_at    timestamptz NOT NULL DEFAULT now(),
    -- Claims so far.
    attempts        integer     NOT NULL DEFAULT 0,
    -- The pod holding the current claim, and until when.
    claimed_by      text,
    lease_until     timestamptz,
    delivered_at    timestamptz
);

-- Claimers scan only undelivered rows, oldest due first.
CREATE INDEX hark_outbox_due ON hark_outbox (available_at) WHERE delivered_at IS NULL;
-- Pruning scans only tombstones, oldest first.
CREATE INDEX hark_outbox_tombstones ON hark_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
