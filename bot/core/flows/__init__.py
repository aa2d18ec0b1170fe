"""The multi-step conversations: one module per flow, registered in bot.core.engine."""
