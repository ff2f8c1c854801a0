-- Password logins (issue 4): investigators and staff log in with a username and password
-- (argon2id hash in users.password_hash, which 0001 already has). Failed logins are
-- counted here, in the database, so a lockout holds across restarts and across nodes.
ALTER TABLE users ADD COLUMN failed_logins BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until BIGINT;
ALTER TABLE users ADD COLUMN last_login_at BIGINT;
-- Where a token came from: 'issued' (POST /tokens, the CLI) or 'login' (POST /auth/login).
ALTER TABLE api_tokens ADD COLUMN source TEXT NOT NULL DEFAULT 'issued';
CREATE INDEX api_tokens_user ON api_tokens (user_id);
