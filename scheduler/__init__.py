"""Proactive messages: the outbox, its senders, and the scheduled jobs that fill it."""
