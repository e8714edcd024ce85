-- Per-key prompt-injection policy (block | flag | off); NULL = the
-- instance's [guard] prompt_injection.
ALTER TABLE api_keys ADD COLUMN prompt_injection TEXT;
