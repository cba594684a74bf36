-- Slash commands (issue 21). A registered command is delivered to an agent
-- (`target_user_id`) or POSTed to a `webhook_url`, signed with the command's own
-- `webhook_secret`; exactly one of the two is set. Names are unique per workspace.
CREATE TABLE commands (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id   INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    target_user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    webhook_url    TEXT,
    webhook_secret TEXT,
    created_by     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at     INTEGER NOT NULL,
    UNIQUE (workspace_id, name),
    CHECK ((target_user_id IS NULL) <> (webhook_url IS NULL))
);

-- A delivery of a `webhook_url` command's event (queued under its registrant) is
-- signed with the command's secret; deleting the command drops its queue.
ALTER TABLE webhook_deliveries ADD COLUMN command_id INTEGER REFERENCES commands(id) ON DELETE CASCADE;

-- `action` for a `/me` message.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text' CHECK (kind IN ('text', 'action'));
