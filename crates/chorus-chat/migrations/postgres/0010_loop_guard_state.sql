-- The loop guard's last change per channel (issue 19), so that every node and every
-- client that (re)loads knows whether the channel's agents are held: `held` with the
-- limit reached, or `released` (`person_wrote`), since when. NULL: it never held.
ALTER TABLE channels ADD COLUMN loop_guard_state TEXT CHECK (loop_guard_state IN ('held', 'released'));
ALTER TABLE channels ADD COLUMN loop_guard_reason TEXT;
ALTER TABLE channels ADD COLUMN loop_guard_since BIGINT;
