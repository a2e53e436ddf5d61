-- Open conversations parked by a session that ended before its conversation did
-- (design.md §6a, "Conversation continuity"), until their user resumes them or
-- their deadline passes and a pod moves them into hark_outbox.
CREATE TABLE hark_parked (
    conversation_id text        PRIMARY KEY,
    uid             text        NOT NULL,
    -- The ParkedConversation as JSON (segments, timings, language, ...).
    conversation    jsonb       NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    -- last transcript + conversation_timeout, on this server's clock.
    deadline        timestamptz NOT NULL
);

-- resume(uid): the user's live parked conversations.
CREATE INDEX hark_parked_uid ON hark_parked (uid, deadline);
-- claim_expired: the ones past their deadline, oldest first.
CREATE INDEX hark_parked_deadline ON hark_parked (deadline);
