-- When a workspace member's present role was given, if not at their join (`NULL`: the
-- role they joined with): a topic whose namespace's `read` rests on the workspace role
-- replays nothing logged before it (the access rule, docs/protocol.md).
ALTER TABLE workspace_members ADD COLUMN role_since BIGINT;
-- Admins and owners of before: when they were given their role is not known, so it
-- counts from now (an older position of an admins' topic gives one reload, never the
-- history from before a promotion). A guest made a member had `joined_at` moved already.
UPDATE workspace_members
SET role_since = (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT
WHERE role IN ('admin', 'owner');
