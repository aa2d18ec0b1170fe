"""Local stand-ins for the external HTTP services the bot talks to, for tests over loopback."""
