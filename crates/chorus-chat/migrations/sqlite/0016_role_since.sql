-- When a workspace member's present role was given, if not at their join (`NULL`: the
-- role they joined with): a topic whose namespace's `read` rests on the workspace role
-- replays nothing logged before it (the access rule, docs/protocol.md).
ALTER TABLE workspace_members ADD COLUMN role_since INTEGER;
