-- A channel's members are members of its workspace, or server admins. Until the add
-- checked that in its own transaction, an add racing a removal from the workspace could
-- leave the removed user in a channel, reading and posting there: those rows go, with
-- the delivery-list entries that name them.
DELETE FROM channel_delivery_lists
WHERE NOT EXISTS (SELECT 1 FROM channels c
                  JOIN workspace_members wm ON wm.workspace_id = c.workspace_id
                  WHERE c.id = channel_delivery_lists.channel_id
                    AND wm.user_id = channel_delivery_lists.user_id)
  AND NOT EXISTS (SELECT 1 FROM users u
                  WHERE u.id = channel_delivery_lists.user_id AND u.is_admin);
DELETE FROM channel_members
WHERE NOT EXISTS (SELECT 1 FROM channels c
                  JOIN workspace_members wm ON wm.workspace_id = c.workspace_id
                  WHERE c.id = channel_members.channel_id
                    AND wm.user_id = channel_members.user_id)
  AND NOT EXISTS (SELECT 1 FROM users u
                  WHERE u.id = channel_members.user_id AND u.is_admin);
