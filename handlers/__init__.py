"""Channels: each translates its platform's events into the core's Inbound and renders Replies."""
