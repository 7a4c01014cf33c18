-- When an operator disabled the user; NULL while they may sign in.
ALTER TABLE users ADD COLUMN disabled_at timestamptz;

-- The operators' list of users pages newest first.
CREATE INDEX users_created_at_id ON users (created_at DESC, id DESC);
